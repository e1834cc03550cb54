//! `turret-sim load` against the real lab: 6 turrets log in over FTPES and register,
//! 5 calls a second for 4 s between them through the TPOs, each held 500 ms; every
//! call is answered, the report gives setup-time percentiles, the exit status is 0;
//! a bad --rate is refused, naming the flag.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn load_places_calls_between_lab_turrets() {
    let lab = common::Lab::start("load");
    let lab_json = lab.dir.join("lab.json");
    let report = lab.dir.join("load.json");
    let out = Command::new(env!("CARGO_BIN_EXE_turret-sim"))
        .args([
            "load",
            "--turrets",
            "6",
            "--rate",
            "5",
            "--duration",
            "4s",
            "--hold",
            "500ms",
        ])
        .arg("--target")
        .arg(&lab_json)
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("6 turrets registered"), "{stdout}");
    assert!(stdout.contains("placed "), "live progress: {stdout}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let placed = r["placed"].as_u64().unwrap();
    assert!(
        (18..=22).contains(&placed),
        "about 20 calls in 4 s at 5/s: {r}"
    );
    assert_eq!(r["answered"], placed, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    let p50 = r["setup_ms_p50"].as_u64().unwrap();
    let p99 = r["setup_ms_p99"].as_u64().unwrap();
    assert!(
        p50 <= p99 && p99 <= r["setup_ms_max"].as_u64().unwrap(),
        "{r}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_turret-sim"))
        .args(["load", "--rate", "0"])
        .arg("--target")
        .arg(&lab_json)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
    lab.stop();
}
