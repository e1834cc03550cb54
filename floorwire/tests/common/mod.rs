//! Helpers shared by the tests that drive real peers.

#![allow(dead_code)] // each test binary uses a subset

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Whether `sipp` can run; under `CI=true` a missing SIPp fails the test loudly.
pub fn sipp_available() -> bool {
    if Command::new("sipp").arg("-v").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "sipp is not installed: the test command installs sip-tester; CI must not skip this test"
        );
    }
    eprintln!(
        "SKIPPING: sipp not installed (apt-get install sip-tester); under CI=true this fails"
    );
    false
}

/// A UDP port free right now on 127.0.0.1 (for SIPp's `-p`).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// A scratch directory for SIPp's logs.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("floorwire-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A scenario file shipped in `tests/sipp/`.
pub fn scenario(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
        .display()
        .to_string()
}

/// Runs sipp with `args` (bounded by the caller's -m and -timeout), in `dir`.
pub fn run_sipp(args: &[String], dir: &PathBuf) -> Output {
    Command::new("sipp")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run sipp")
}

/// The end of SIPp's output, for failure messages.
pub fn tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!(
        "status {:?}\nstderr: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        lines[start..].join("\n")
    )
}
