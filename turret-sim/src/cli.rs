//! What `turret-sim run` does around the runner: load every file first (a bad file
//! fails the run before anything starts), start a lab when asked, run the scenarios
//! one after the other with live progress, write the reports.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::lab::LabOptions;
use crate::scenario::{self, report, run::ScenarioResult, target::Target};

/// Runs `files` against a lab started for the run (`lab`) or running (`target`);
/// true when every scenario passed.
pub async fn run_scenarios(
    files: &[PathBuf],
    lab: Option<LabOptions>,
    target: Option<PathBuf>,
    junit: Option<&Path>,
    json: Option<&Path>,
    shutdown: CancellationToken,
) -> Result<bool, Error> {
    let mut scenarios = Vec::new();
    for file in files {
        scenarios.push((file.display().to_string(), scenario::load(file)?));
    }
    let lab_stop = shutdown.child_token();
    let (lab_task, lab_json) = match (lab, target) {
        (Some(options), _) => {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let stop = lab_stop.clone();
            let task = tokio::spawn(async move {
                crate::lab::run(options, stop, move |path| {
                    let _ = ready_tx.send(path.to_path_buf());
                })
                .await
            });
            match ready_rx.await {
                Ok(path) => {
                    println!("lab ready: {}", path.display());
                    (Some(task), path)
                }
                Err(_) => {
                    return Err(match task.await {
                        Ok(Err(e)) => e,
                        _ => Error::Lab("the lab stopped before it was ready".into()),
                    });
                }
            }
        }
        (None, Some(path)) => (None, path),
        (None, None) => {
            return Err(Error::Scenario(
                "give --lab (start a lab for the run) or --target LAB.JSON (a lab already running)"
                    .into(),
            ));
        }
    };
    let target = Target::load(&lab_json)?;
    let mut results: Vec<ScenarioResult> = Vec::new();
    for (file, s) in &scenarios {
        if shutdown.is_cancelled() {
            break;
        }
        println!("{} ({file})", s.name);
        let result = scenario::run::run(s, file, &target, |step| {
            println!("{}", report::step_line(step));
        })
        .await;
        println!("{}", report::scenario_line(&result));
        results.push(result);
    }
    let passed = results.iter().filter(|r| r.passed).count();
    println!(
        "{passed} of {} scenarios passed{}",
        scenarios.len(),
        if results.len() < scenarios.len() {
            " (interrupted)"
        } else {
            ""
        }
    );
    let written = junit
        .map(|path| report::write_junit(path, &results))
        .transpose()
        .and_then(|_| {
            json.map(|path| report::write_json(path, &results))
                .transpose()
        });
    lab_stop.cancel();
    if let Some(task) = lab_task {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "lab"),
            Err(e) => tracing::warn!(error = %e, "lab task"),
            Ok(Ok(())) => {}
        }
    }
    written?;
    Ok(passed == scenarios.len() && results.len() == scenarios.len())
}
