//! Results as people and CI read them: a line per step on the terminal, JSON, and
//! JUnit XML (a test suite per run, a test case per scenario).

use std::path::Path;

use quick_xml::escape::escape;

use super::run::{ScenarioResult, StepResult};
use crate::Error;

/// A step's line of live progress.
pub fn step_line(step: &StepResult) -> String {
    let mark = match step.outcome {
        "passed" => "ok  ",
        "failed" => "FAIL",
        _ => "skip",
    };
    let detail = step
        .detail
        .as_deref()
        .map(|d| format!(" — {d}"))
        .unwrap_or_default();
    format!(
        "  {mark} {:>2}. {} ({} ms){detail}",
        step.index + 1,
        step.step,
        step.millis
    )
}

/// The last line of a scenario.
pub fn scenario_line(result: &ScenarioResult) -> String {
    format!(
        "{} {} ({}, {} ms)",
        if result.passed { "PASSED" } else { "FAILED" },
        result.name,
        result.file,
        result.millis
    )
}

/// Writes the results as JSON.
pub fn write_json(path: &Path, results: &[ScenarioResult]) -> Result<(), Error> {
    let passed = results.iter().filter(|r| r.passed).count();
    let document = serde_json::json!({
        "passed": passed,
        "failed": results.len() - passed,
        "scenarios": results,
    });
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&document).unwrap_or_default(),
    )?;
    Ok(())
}

/// The results as JUnit XML.
pub fn junit(results: &[ScenarioResult]) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let seconds = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
    let total: u64 = results.iter().map(|r| r.millis).sum();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"turret-sim\" tests=\"{}\" failures=\"{failures}\" time=\"{}\">\n",
        results.len(),
        seconds(total)
    );
    for r in results {
        xml.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{}\">\n",
            escape(r.file.as_str()),
            escape(r.name.as_str()),
            seconds(r.millis)
        ));
        if let Some(failed) = r.steps.iter().find(|s| s.outcome == "failed") {
            let message = format!(
                "step {} ({}): {}",
                failed.index + 1,
                failed.step,
                failed.detail.as_deref().unwrap_or("failed")
            );
            xml.push_str(&format!(
                "    <failure message=\"{}\">{}</failure>\n",
                escape(message.as_str()),
                escape(message.as_str())
            ));
        }
        let steps: Vec<String> = r.steps.iter().map(step_line).collect();
        xml.push_str(&format!(
            "    <system-out>{}</system-out>\n  </testcase>\n",
            escape(steps.join("\n").as_str())
        ));
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// Writes the results as JUnit XML.
pub fn write_junit(path: &Path, results: &[ScenarioResult]) -> Result<(), Error> {
    std::fs::write(path, junit(results))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_names_the_failing_step_and_escapes() {
        let result = ScenarioResult {
            name: "a <b> & c".into(),
            file: "x.yaml".into(),
            passed: false,
            millis: 1500,
            steps: vec![
                StepResult {
                    index: 0,
                    step: "register trader01".into(),
                    outcome: "passed",
                    millis: 100,
                    detail: None,
                },
                StepResult {
                    index: 1,
                    step: "expect trader01 up".into(),
                    outcome: "failed",
                    millis: 5000,
                    detail: Some("not within \"5000\" ms".into()),
                },
            ],
        };
        let xml = junit(&[result]);
        assert!(xml.contains("tests=\"1\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"a &lt;b&gt; &amp; c\""), "{xml}");
        assert!(
            xml.contains("step 2 (expect trader01 up): not within &quot;5000&quot; ms"),
            "{xml}"
        );
        assert!(xml.contains("time=\"1.500\""), "{xml}");
    }
}
