//! SIPp as the TPO and SIPp as the carrier, the real `sbc-shim` between them: calls
//! arrive at the carrier in E.164 with nothing of the TPO's leg, and end cleanly
//! whoever hangs up or cancels; strangers and premium numbers are refused; a rule
//! reload (SIGHUP) applies to new calls while an established call carries on.

mod common;
#[path = "../../floorwire/tests/common/mod.rs"]
mod peers;
#[path = "../../tests-common/service.rs"]
mod service;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Carrier, STANDALONE, Uac, sbc_config, write_scratch};

const BIN: &str = env!("CARGO_BIN_EXE_sbc-shim");
const TPO_IP: &str = "127.0.6.21";
const CARRIER_IP: &str = "127.0.6.3";

/// A standalone SBC on `ip`:5060 with the carrier at `carrier` and the TPO at `tpo`.
fn sbc(
    ip: &str,
    carrier: &str,
    tpo: &str,
    rules: Option<&str>,
    ports: (u16, u16),
) -> service::Service {
    let config = sbc_config(
        &format!("{ip}:9200"),
        &format!("{ip}:5060"),
        carrier,
        tpo,
        ports,
        rules,
        STANDALONE,
    );
    let path = write_scratch(&format!("sbc-{ip}.toml"), &config);
    service::start_with_args(BIN, &["serve", "--config", &path], &[])
}

fn sipp_uas(scenario: &str, ip: &str, calls: u32, dir: &std::path::Path) -> Child {
    Command::new("sipp")
        .args(["-sf", &peers::scenario(scenario), "-i", ip, "-p", "5060"])
        .args([
            "-m",
            &calls.to_string(),
            "-timeout",
            "60",
            "-timeout_error",
            "-bg",
        ])
        .args(["-trace_err"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp uas")
}

fn sipp_uac(
    scenario: &str,
    calls: u32,
    rate: u32,
    sbc: &str,
    dir: &std::path::PathBuf,
) -> std::process::Output {
    let args: Vec<String> = [
        "-sf",
        &peers::scenario(scenario),
        sbc,
        "-i",
        TPO_IP,
        "-p",
        "5060",
        "-m",
        &calls.to_string(),
        "-r",
        &rate.to_string(),
        "-timeout",
        "60",
        "-timeout_error",
        "-trace_err",
        "-trace_screen",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    peers::run_sipp(&args, dir)
}

/// Waits for a backgrounded SIPp (it daemonises with -bg) to finish: its process is
/// found by its scenario file (each test uses its own scenario files).
fn wait_sipp_uas(scenario: &str) {
    let name = peers::scenario(scenario);
    service::wait_until(
        Duration::from_secs(60),
        "the SIPp carrier to finish",
        || {
            let out = Command::new("pgrep")
                .args(["-f", &name])
                .output()
                .expect("pgrep");
            out.stdout.is_empty()
        },
    );
}

/// What SIPp's error logs in `dir` report, less SIPp's notes about its own socket
/// clean-up (no call error): empty when every check passed.
fn sipp_errors(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("_errors.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.contains("The following events occurred"))
        .filter(|l| !l.contains("Failed to delete FD from epoll"))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs SIPp's carrier in the background and SIPp's TPO against the SBC: the TPO's exit
/// status says every call passed; the error logs of both say no check failed (the
/// carrier's `ereg` checks fail calls on its side).
fn run_pair(uas: &str, uac: &str, calls: u32, sbc_ip: &str, dir: &std::path::PathBuf) {
    let mut carrier = sipp_uas(uas, CARRIER_IP, calls, dir);
    let _ = carrier.wait();
    // SIPp's -bg parent exits at once; the carrier is now listening in the background.
    let out = sipp_uac(uac, calls, 100, &format!("{sbc_ip}:5060"), dir);
    assert!(
        out.status.success(),
        "{uac} through the SBC: {}",
        peers::tail(&out)
    );
    wait_sipp_uas(uas);
    let errors = sipp_errors(dir);
    assert!(errors.is_empty(), "SIPp errors ({uas} / {uac}):\n{errors}");
}

#[test]
fn sipp_calls_through_the_sbc_arrive_in_e164_and_end_cleanly() {
    if !peers::sipp_available() {
        return;
    }
    let sbc_ip = "127.0.6.30";
    let tpo = format!("{TPO_IP}:5060");
    let sbc = sbc(
        sbc_ip,
        &format!("{CARRIER_IP}:5060"),
        &tpo,
        None,
        (22000, 22999),
    );
    let dir = peers::scratch("sbc-sipp");
    // Caller hangs up, callee hangs up, caller cancels.
    run_pair("carrier-uas.xml", "tpo-uac.xml", 200, sbc_ip, &dir);
    run_pair(
        "carrier-uas-hangup.xml",
        "tpo-uac-callee-bye.xml",
        50,
        sbc_ip,
        &dir,
    );
    run_pair(
        "carrier-uas-ring.xml",
        "tpo-uac-cancel.xml",
        50,
        sbc_ip,
        &dir,
    );
    let m = |name: &str| service::metric(sbc.admin, name).unwrap_or(-1.0);
    service::wait_until(
        Duration::from_secs(5),
        "every call ended in the SBC",
        || m("floorwire_sbc_calls_active") == 0.0,
    );
    assert_eq!(m("floorwire_sbc_calls_answered_total"), 250.0);
    assert_eq!(m("floorwire_sbc_calls_ended_total"), 250.0);
    assert_eq!(
        m("floorwire_sbc_calls_unanswered_total"),
        50.0,
        "the cancelled calls"
    );
    assert!(service::terminate(sbc).success());
}

#[test]
fn strangers_and_premium_numbers_are_refused_and_rules_reload_without_dropping_calls() {
    let sbc_ip = "127.0.7.30";
    let carrier_sip = "127.0.7.3:5060";
    let carrier = Carrier::start(carrier_sip, "127.0.7.3:30000");
    let rules_v1 = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/fr.toml"))
        .expect("French preset");
    let rules_path = write_scratch("reload-rules.toml", &rules_v1);
    let sbc = sbc(
        sbc_ip,
        carrier_sip,
        &format!("{TPO_IP}:5060"),
        Some(&rules_path),
        (23000, 23999),
    );
    let target = format!("{sbc_ip}:5060").parse().expect("addr");
    let m = |name: &str| service::metric(sbc.admin, name).unwrap_or(-1.0);

    // A stranger (not a TPO, not the carrier) may not call through: 403.
    let mut stranger = Uac::bind("127.0.7.99:0");
    let media = "127.0.7.99:40000".parse().expect("addr");
    assert_eq!(
        stranger
            .call(target, "0142685300", "0140000000", media)
            .err(),
        Some(403)
    );
    // A premium number is blocked by the carrier trunk's policy: 403.
    let mut tpo = Uac::bind(&format!("{TPO_IP}:0"));
    let media = format!("{TPO_IP}:40000").parse().expect("addr");
    assert_eq!(
        tpo.call(target, "0899123456", "0140000000", media).err(),
        Some(403)
    );
    // A number no rule accepts: 484 (incomplete).
    assert_eq!(
        tpo.call(target, "01426", "0140000000", media).err(),
        Some(484)
    );

    // An established call, then a new rule version that refuses 01 42… numbers.
    let mut call = tpo
        .call(target, "0142685300", "0140000000", media)
        .expect("call under v1");
    let (_, body) = service::http_get(sbc.admin, "/metrics");
    assert!(
        body.contains("floorwire_sbc_rules_info{version=\"fr-2026.11.1\"} 1"),
        "{body}"
    );
    let rules_v2 = rules_v1
        .replacen("version = \"fr-2026.11.1\"", "version = \"fr-test.2\"", 1)
        .replacen(
            "[[rule]]",
            "[[rule]]\nname = \"closed-range\"\nprefix = \"0142\"\nrefuse = 404\nreason = \"range closed\"\n\n[[rule]]",
            1,
        );
    assert_ne!(rules_v2, rules_v1);
    std::fs::write(&rules_path, &rules_v2).expect("write v2");
    let pid = sbc.child.id().to_string();
    let hang_up = || {
        let sent = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(sent.expect("kill").success(), "SIGHUP to the SBC");
    };
    hang_up();
    service::wait_until(Duration::from_secs(5), "rules v2 in force", || {
        service::http_get(sbc.admin, "/metrics")
            .1
            .contains("floorwire_sbc_rules_info{version=\"fr-test.2\"} 1")
    });
    assert_eq!(
        tpo.call(target, "0142685300", "0140000000", media).err(),
        Some(404),
        "new calls follow the new rules"
    );
    // A broken rule file is refused whole; v2 stays in force.
    std::fs::write(&rules_path, "version = \"broken\"\n[[rule]]\nname = 3\n")
        .expect("write broken");
    hang_up();
    service::wait_until(Duration::from_secs(5), "the refused reload counted", || {
        m("floorwire_sbc_rules_reload_failures_total") == 1.0
    });
    assert!(
        service::http_get(sbc.admin, "/metrics")
            .1
            .contains("version=\"fr-test.2\"} 1")
    );
    // The call set up under v1 is still up and ends cleanly.
    assert_eq!(m("floorwire_sbc_calls_active"), 1.0);
    assert_eq!(
        tpo.in_dialog(&mut call, floorwire::sip::msg::Method::Bye, None),
        200
    );
    service::wait_until(Duration::from_secs(5), "the carrier saw the BYE", || {
        carrier.stats().calls_ended == 1
    });
    assert!(service::terminate(sbc).success());
}

#[test]
fn inbound_calls_reach_the_tpo_with_a_national_calling_number() {
    if !peers::sipp_available() {
        return;
    }
    let sbc_ip = "127.0.9.30";
    let tpo_ip = "127.0.9.21";
    let carrier_ip = "127.0.9.3";
    let sbc = sbc(
        sbc_ip,
        &format!("{carrier_ip}:5060"),
        &format!("{tpo_ip}:5060"),
        None,
        (24000, 24999),
    );
    let dir = peers::scratch("sbc-inbound");
    let mut tpo = sipp_uas("tpo-uas.xml", tpo_ip, 5, &dir);
    let _ = tpo.wait();
    // The carrier (a UAC on its address) calls a DID in E.164, from an E.164 caller.
    let mut carrier = Uac::bind(&format!("{carrier_ip}:0"));
    let target = format!("{sbc_ip}:5060").parse().expect("addr");
    let media = format!("{carrier_ip}:40000").parse().expect("addr");
    for i in 0..5 {
        let mut call = carrier
            .call(target, "+33142685300", "+33140000000", media)
            .unwrap_or_else(|status| panic!("inbound call {i}: {status}"));
        assert_eq!(
            carrier.in_dialog(&mut call, floorwire::sip::msg::Method::Bye, None),
            200
        );
    }
    wait_sipp_uas("tpo-uas.xml");
    let errors = sipp_errors(&dir);
    assert!(errors.is_empty(), "the TPO's checks failed:\n{errors}");
    let m = |name: &str| service::metric(sbc.admin, name).unwrap_or(-1.0);
    assert_eq!(m("floorwire_sbc_calls_ended_total"), 5.0);
    assert!(service::terminate(sbc).success());
}
