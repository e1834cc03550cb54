//! Calls through the real `tpo` binary: two SIPp turrets register with their TSS
//! credentials; one calls the other's line number, the TPO routes it by the dial plan
//! to the registered device (a B2BUA: two dialogs, SDP anchored on the TPO's relay),
//! the callee answers, the caller hangs up.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

#[path = "../../floorwire/tests/common/mod.rs"]
mod sipp;

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// SIPp arguments for `scenario` as `device` from `ip:port`.
fn sipp_args(
    tpo: SocketAddr,
    scenario: &str,
    device: &str,
    password: &str,
    ip: &str,
    port: u16,
) -> Vec<String> {
    let scenario = if scenario.starts_with("uac-register") {
        format!(
            "{}/../floorwire/tests/sipp/{scenario}",
            env!("CARGO_MANIFEST_DIR")
        )
    } else {
        format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"))
    };
    [
        tpo.to_string().as_str(),
        "-sf",
        &scenario,
        "-s",
        device,
        "-au",
        device,
        "-ap",
        password,
        "-i",
        ip,
        "-p",
        &port.to_string(),
        "-mp",
        &(20000 + sipp::free_udp_port() % 20000).to_string(),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Registers `device` from `ip:port` (SIPp answering the digest challenge).
fn register(
    tpo: SocketAddr,
    dir: &std::path::Path,
    device: &str,
    password: &str,
    ip: &str,
    port: u16,
) {
    let out = sipp::run_sipp(
        &sipp_args(tpo, "uac-register-digest.xml", device, password, ip, port),
        &dir.to_path_buf(),
    );
    assert!(
        out.status.success(),
        "{device} registers: {}",
        sipp::tail(&out)
    );
}

/// Waits until SIPp has bound `ip:port` (binding it ourselves then fails).
fn listening(ip: &str, port: u16) {
    service::wait_until(Duration::from_secs(10), "SIPp listening", || {
        std::net::UdpSocket::bind((ip, port)).is_err()
    });
}

/// A free UDP port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_turret_calls_another_turrets_line() {
    if !sipp::sipp_available() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, _fixture) = common::serve(&runtime, common::config(1, "pass-one", "pass-two"));
    let dir = sipp::scratch("tpo-calls");
    let url = format!("http://{tss}");
    let spool = dir.join("spool").display().to_string();
    let sbc_port = free_port("127.0.10.9");
    let sbc_addr = format!("127.0.10.9:{sbc_port}");
    let env = [
        ("TPO__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TPO__SIP__LISTEN", "127.0.0.1:0"),
        ("TPO__TSS__URL", url.as_str()),
        ("TPO__TSS__TOKEN", common::TOKEN),
        ("TPO__TSS__POLL_INTERVAL_MS", "100"),
        ("TPO__CALL_RECORDS__SPOOL_DIR", spool.as_str()),
        ("TPO__MEDIA__FIRST_PORT", "42000"),
        ("TPO__MEDIA__LAST_PORT", "42999"),
        ("TPO__SBC__ADDRESS", sbc_addr.as_str()),
    ];
    let tpo = service::start(env!("CARGO_BIN_EXE_tpo"), &env);
    let sip = service::ready_endpoint(&tpo.ready, "sip").unwrap();
    let metric = |name: &str| service::metric(tpo.admin, name).unwrap_or(-1.0);
    service::wait_until(Duration::from_secs(10), "configuration", || {
        metric("floorwire_tpo_config_revision") == 1.0
    });

    // Both turrets register; the callee then waits for the call on the same port.
    let (callee_port, caller_port) = (free_port("127.0.10.6"), free_port("127.0.10.5"));
    register(
        sip,
        &dir,
        "dev-T-0002",
        "pass-two",
        "127.0.10.6",
        callee_port,
    );
    register(
        sip,
        &dir,
        "dev-T-0001",
        "pass-one",
        "127.0.10.5",
        caller_port,
    );
    assert_eq!(metric("floorwire_tpo_registered_devices"), 2.0);
    let callee_dir = dir.join("callee");
    std::fs::create_dir_all(&callee_dir).unwrap();
    let callee = Command::new("sipp")
        .args(sipp_args(
            sip,
            "uas-answer.xml",
            "dev-T-0002",
            "pass-two",
            "127.0.10.6",
            callee_port,
        ))
        .current_dir(&callee_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listening("127.0.10.6", callee_port);

    // The caller dials trader02's line 7101.
    let caller_dir = dir.join("caller");
    std::fs::create_dir_all(&caller_dir).unwrap();
    let numbers = caller_dir.join("numbers.csv");
    std::fs::write(&numbers, "SEQUENTIAL\n7101;\n").unwrap();
    let mut args = sipp_args(
        sip,
        "uac-call.xml",
        "dev-T-0001",
        "pass-one",
        "127.0.10.5",
        caller_port,
    );
    args.extend(["-inf".to_string(), numbers.display().to_string()]);
    let caller = sipp::run_sipp(&args, &caller_dir);
    let callee = callee.wait_with_output().unwrap();
    assert!(caller.status.success(), "caller: {}", sipp::tail(&caller));
    assert!(callee.status.success(), "callee: {}", sipp::tail(&callee));

    // An external number goes to the SBC (a SIPp stand-in answering).
    let sbc_dir = dir.join("sbc");
    std::fs::create_dir_all(&sbc_dir).unwrap();
    let sbc = Command::new("sipp")
        .args(sipp_args(
            sip,
            "uas-answer.xml",
            "sbc",
            "-",
            "127.0.10.9",
            sbc_port,
        ))
        .current_dir(&sbc_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listening("127.0.10.9", sbc_port);
    std::fs::write(&numbers, "SEQUENTIAL\n0142685300;\n").unwrap();
    let caller = sipp::run_sipp(&args, &caller_dir);
    let sbc = sbc.wait_with_output().unwrap();
    assert!(
        caller.status.success(),
        "external call: {}",
        sipp::tail(&caller)
    );
    assert!(sbc.status.success(), "SBC stand-in: {}", sipp::tail(&sbc));

    // Refused: a number the dial plan refuses, and any call from an unregistered address.
    std::fs::write(&numbers, "SEQUENTIAL\n0899123456;\n").unwrap();
    let refused = |ip: &str, port: u16| {
        let mut args = sipp_args(
            sip,
            "uac-call-refused.xml",
            "dev-T-0001",
            "pass-one",
            ip,
            port,
        );
        args.extend(["-inf".to_string(), numbers.display().to_string()]);
        sipp::run_sipp(&args, &caller_dir)
    };
    let out = refused("127.0.10.5", caller_port);
    assert!(
        out.status.success(),
        "premium refused 403: {}",
        sipp::tail(&out)
    );
    std::fs::write(&numbers, "SEQUENTIAL\n7101;\n").unwrap();
    let out = refused("127.0.10.7", free_port("127.0.10.7"));
    assert!(
        out.status.success(),
        "stranger refused 403: {}",
        sipp::tail(&out)
    );
    assert!(service::terminate(tpo).success());
    let _ = std::fs::remove_dir_all(dir);
}
