//! The shipped scenarios (deploy/lab/scenarios/), every one run by `turret-sim run
//! --lab` against a lab of its own: login and profile, internal call, external call
//! at the carrier as +33…, inbound call to a shared line on four TPOs, private-wire
//! ringdown, recording on both recorders with replay, TPO loss, SBC failover, recorder
//! loss. Then a scenario that must fail, to show the runner says so.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn run(dir: &Path, scenarios: &[PathBuf]) -> (Output, Value, String) {
    let json = dir.join("results.json");
    let junit = dir.join("results.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_turret-sim"))
        .args(["run", "--lab", "--dir"])
        .arg(dir.join("lab"))
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .args(scenarios)
        .output()
        .unwrap();
    let results = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let junit = std::fs::read_to_string(&junit).unwrap_or_default();
    (out, results, junit)
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_shipped_scenarios_pass_against_the_lab_and_a_failing_one_fails() {
    let dir = std::env::temp_dir().join(format!("floorwire-scenarios-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = shipped();
    assert!(files.len() >= 11, "shipped scenarios: {files:?}");
    // The directory-loss scenario needs the lab's directories: slapd, which the test
    // command installs (required under CI=true).
    if !std::path::Path::new("/usr/sbin/slapd").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "slapd is required under CI=true (deploy/test.sh installs it)"
        );
        eprintln!("SKIPPING 11-ldap-loss.yaml: slapd is not installed; under CI=true this fails");
        files.retain(|f| !f.to_string_lossy().contains("ldap"));
    }
    let (out, results, junit) = run(&dir.join("shipped"), &files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "turret-sim run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(results["passed"], files.len(), "{results}");
    assert_eq!(results["failed"], 0);
    assert!(
        junit.contains(&format!("tests=\"{}\" failures=\"0\"", files.len())),
        "{junit}"
    );
    // The measured TPO outage is within the 2 s target (the step would fail otherwise),
    // and the report carries the figure.
    assert!(stdout.contains("after the fault"), "{stdout}");

    let must_fail = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/must-fail.yaml");
    let (out, results, junit) = run(&dir.join("failing"), &[must_fail]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(results["failed"], 1, "{results}");
    let steps = &results["scenarios"][0]["steps"];
    assert_eq!(steps[2]["outcome"], "failed", "{steps}");
    assert!(
        steps[2]["detail"].as_str().unwrap().contains("trader12"),
        "{steps}"
    );
    assert_eq!(steps[3]["outcome"], "skipped");
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(junit.contains("step 3 (expect trader12 rang)"), "{junit}");
    let _ = std::fs::remove_dir_all(&dir);
}
