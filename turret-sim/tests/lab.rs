//! The real `turret-sim lab`: every service of the dual-DC lab up and healthy, lab.json
//! as DESIGN.md describes it, SIPp turrets registering with the credentials lab.json
//! lists and calling through the TPOs (a turret on another TPO, the carrier through
//! the SBC), a TPO stopped and started again through the control port, and a clean
//! stop on SIGTERM that leaves no service behind.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

#[path = "../../floorwire/tests/common/mod.rs"]
mod sipp;

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn scenario(crate_dir: &str, name: &str) -> String {
    format!(
        "{}/../{crate_dir}/tests/sipp/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// SIPp as `user`'s turret from `127.0.10.N:port`, with the user's lab credentials.
fn turret(
    user: &Value,
    n: u8,
    port: u16,
    scenario: &str,
    dir: &Path,
    number: Option<&str>,
) -> Child {
    let sip = &user["sip"];
    let registrar = sip["registrar"].as_str().unwrap();
    let username = sip["username"].as_str().unwrap();
    let dir = dir.join(format!(
        "{username}-{}",
        Path::new(scenario).file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut args: Vec<String> = [
        registrar,
        "-sf",
        scenario,
        "-s",
        username,
        "-au",
        username,
        "-ap",
        sip["password"].as_str().unwrap(),
        "-i",
        &format!("127.0.10.{n}"),
        "-p",
        &port.to_string(),
        "-m",
        "1",
        "-timeout",
        "20s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if let Some(number) = number {
        let inf = dir.join("number.csv");
        std::fs::write(&inf, format!("SEQUENTIAL\n{number};\n")).unwrap();
        args.extend(["-inf".to_owned(), inf.display().to_string()]);
    }
    Command::new("sipp")
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn passed(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", sipp::tail(&out));
}

fn post(addr: SocketAddr, path: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// POST `json` to `addr`; (status, body).
fn post_json(addr: SocketAddr, path: &str, json: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST", "-d", json])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The carrier's call log.
fn carrier_calls(admin: SocketAddr) -> Vec<Value> {
    let (_, text) = service::http_get(admin, "/calls");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn service_up(control: SocketAddr, name: &str) -> bool {
    let (_, body) = service::http_get(control, "/services");
    let body = body.split("\r\n\r\n").last().unwrap_or_default().to_owned();
    let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    list.as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .is_some_and(|s| s["up"] == true)
}

#[test]
fn lab_runs_the_floor_and_stops_cleanly() {
    if !sipp::sipp_available() {
        return;
    }
    let lab = common::Lab::start("floor");
    let lab_json = lab.json.clone();

    // Every service DESIGN.md lists, each healthy on its admin port.
    let services = lab_json["services"].as_object().unwrap();
    let kinds: Vec<(&str, &str)> = services
        .iter()
        .map(|(n, s)| (n.as_str(), s["kind"].as_str().unwrap()))
        .collect();
    for (name, kind) in [
        ("tss-1", "tss"),
        ("tss-2", "tss"),
        ("tpo-1a", "tpo"),
        ("tpo-1b", "tpo"),
        ("tpo-2a", "tpo"),
        ("tpo-2b", "tpo"),
        ("sbc-1", "sbc"),
        ("sbc-2", "sbc"),
        ("carrier", "carrier"),
        ("recorder-1", "recorder"),
        ("recorder-2", "recorder"),
    ] {
        assert!(
            kinds.contains(&(name, kind)),
            "lab.json lacks {name} ({kind}): {kinds:?}"
        );
        let (status, _) = service::http_get(lab.endpoint(name, "admin"), "/healthz");
        assert_eq!(status, 200, "{name} is healthy");
    }
    // The directories run when slapd is installed (the test command installs it).
    let slapd = std::path::Path::new("/usr/sbin/slapd").exists();
    assert!(
        slapd || std::env::var("CI").as_deref() != Ok("true"),
        "slapd is required under CI=true (deploy/test.sh installs it)"
    );
    if slapd {
        for name in ["ldap-1", "ldap-2"] {
            assert!(
                kinds.contains(&(name, "ldap")),
                "lab.json lacks {name}: {kinds:?}"
            );
            let ldaps = lab.endpoint(name, "ldaps");
            assert!(
                std::net::TcpStream::connect(ldaps).is_ok(),
                "{name} listens on {ldaps}"
            );
        }
    }
    assert_eq!(
        lab.endpoint("tpo-1a", "sip"),
        "127.0.1.21:5060".parse().unwrap()
    );
    assert_eq!(
        lab.endpoint("tss-2", "https").ip().to_string(),
        "127.0.2.10"
    );
    assert_eq!(lab.endpoint("tss-1", "ftpes").port(), 2121);
    let users = lab_json["users"].as_array().unwrap();
    assert_eq!(users.len(), 20);
    let user = |name: &str| users.iter().find(|u| u["name"] == name).unwrap().clone();
    let (trader01, trader11) = (user("trader01"), user("trader11"));
    assert_eq!(trader01["tpo"], "tpo-1a");
    assert_eq!(trader11["sip"]["registrar"], "127.0.2.21:5060");
    assert!(
        lab_json["carrier"]["dids"]
            .as_array()
            .unwrap()
            .contains(&Value::from("+33142685300"))
    );
    let control: SocketAddr = lab_json["control"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();

    // SIPp turrets register with lab.json's credentials; trader01 (tpo-1a) calls
    // trader11's extension, registered on tpo-2a: the call goes through the peer.
    let scratch = sipp::scratch("lab");
    let (caller_port, callee_port) = (
        service::free_port("127.0.10.1"),
        service::free_port("127.0.10.11"),
    );
    let register = scenario("floorwire", "uac-register-digest.xml");
    passed(
        turret(&trader01, 1, caller_port, &register, &scratch, None),
        "trader01 registers",
    );
    passed(
        turret(&trader11, 11, callee_port, &register, &scratch, None),
        "trader11 registers",
    );
    let callee = turret(
        &trader11,
        11,
        callee_port,
        &scenario("tpo", "uas-answer.xml"),
        &scratch,
        None,
    );
    // No wait for SIPp to bind: the TPO retransmits the INVITE until it answers.
    let number = trader11["sip"]["number"].as_str().unwrap().to_owned();
    let caller = turret(
        &trader01,
        1,
        caller_port,
        &scenario("tpo", "uac-call.xml"),
        &scratch,
        Some(&number),
    );
    passed(caller, "trader01 calls trader11 through the peer TPO");
    passed(callee, "trader11 answers");

    // An external call: TPO → SBC (normalised) → the carrier stand-in answers.
    let sbc_admin = lab.endpoint("sbc-1", "admin");
    let caller = turret(
        &trader01,
        1,
        caller_port,
        &scenario("tpo", "uac-call.xml"),
        &scratch,
        Some("0140000000"),
    );
    passed(caller, "trader01 calls out through the SBC to the carrier");
    let carrier_invites = service::metric(
        lab.endpoint("carrier", "admin"),
        "floorwire_sip_requests_received_total",
    )
    .unwrap_or(0.0);
    assert!(
        carrier_invites >= 2.0,
        "the carrier got the INVITE and the BYE ({carrier_invites})"
    );
    assert!(service::metric(sbc_admin, "floorwire_sbc_ha_active") == Some(1.0));
    let carrier_admin = lab.endpoint("carrier", "admin");
    assert!(
        carrier_calls(carrier_admin)
            .iter()
            .any(|c| c["called"] == "+33140000000"),
        "the carrier logged the number as the SBC normalised it"
    );

    // The carrier places an inbound call to the FX desk's DID: trader11 (a holder of
    // the shared line) answers; the carrier hangs up after a second.
    let callee = turret(
        &trader11,
        11,
        callee_port,
        &scenario("tpo", "uas-answer.xml"),
        &scratch,
        None,
    );
    let (status, body) = post_json(
        carrier_admin,
        "/calls",
        r#"{"from": "0612345678", "to": "+33142685300", "hold_secs": 1}"#,
    );
    assert_eq!(status, 202, "{body}");
    passed(callee, "trader11 answers the carrier's inbound call");
    service::wait_until(Duration::from_secs(10), "the inbound call over", || {
        carrier_calls(carrier_admin)
            .iter()
            .any(|c| c["direction"] == "inbound" && c["state"] == "ended")
    });
    let (status, body) = post_json(
        carrier_admin,
        "/calls",
        r#"{"from": "x", "to": "+33142685300"}"#,
    );
    assert_eq!(status, 400);
    assert!(body.contains("from"), "{body}");

    // The control port stops and starts a TPO; its peers see it go and come back.
    let tpo_1a = lab.endpoint("tpo-1a", "admin");
    let peer_up = || {
        let (_, text) = service::http_get(tpo_1a, "/metrics");
        text.lines()
            .any(|l| l == "floorwire_tpo_peer_up{peer=\"127.0.1.22:5060\"} 1")
    };
    assert!(peer_up());
    assert_eq!(post(control, "/services/tpo-1b/stop"), 200);
    assert!(!service_up(control, "tpo-1b"));
    service::wait_until(Duration::from_secs(5), "tpo-1a sees tpo-1b down", || {
        !peer_up()
    });
    assert_eq!(post(control, "/services/tpo-1b/start"), 200);
    assert!(service_up(control, "tpo-1b"));
    service::wait_until(Duration::from_secs(5), "tpo-1a sees tpo-1b again", peer_up);
    assert_eq!(post(control, "/services/no-such/stop"), 404);

    prometheus_scrapes_every_service(&lab);

    lab.stop();
    // Nothing is left holding the lab's addresses.
    for sip in [
        "127.0.1.21:5060",
        "127.0.2.22:5060",
        "127.0.1.30:5060",
        "127.0.3.1:5060",
    ] {
        UdpSocket::bind(sip)
            .unwrap_or_else(|e| panic!("{sip} still held after the lab stopped: {e}"));
    }
}

/// promtool checks deploy/prometheus (the configuration, the alert rules and their
/// unit tests); then Prometheus, with that configuration and the lab's
/// prometheus-targets.json, scrapes every service that has an admin port.
fn prometheus_scrapes_every_service(lab: &common::Lab) {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is required under CI=true (deploy/test.sh installs prometheus)"
        );
        eprintln!(
            "SKIPPING the Prometheus part: apt-get install prometheus; under CI=true this fails"
        );
        return;
    }
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "floorwire.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&deploy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The shipped configuration, scraping each second, with the lab's targets.
    let dir = lab.dir.join("prometheus");
    std::fs::create_dir_all(dir.join("targets")).unwrap();
    let config = std::fs::read_to_string(deploy.join("prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    assert!(config.contains("scrape_interval: 1s"));
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        deploy.join("floorwire.rules.yml"),
        dir.join("floorwire.rules.yml"),
    )
    .unwrap();
    std::fs::copy(
        lab.dir.join("prometheus-targets.json"),
        dir.join("targets/lab.json"),
    )
    .unwrap();
    let targets: Value =
        serde_json::from_slice(&std::fs::read(dir.join("targets/lab.json")).unwrap()).unwrap();
    let jobs: Vec<&str> = targets
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["labels"]["job"].as_str().unwrap())
        .collect();
    for (job, count) in [("tss", 2), ("tpo", 4), ("sbc", 2)] {
        assert_eq!(
            jobs.iter().filter(|j| **j == job).count(),
            count,
            "{job} targets in {jobs:?}"
        );
    }
    let listen: SocketAddr = format!("127.0.0.1:{}", service::free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let query = |q: &str| -> Option<Value> {
        std::net::TcpStream::connect(listen).ok()?;
        let (status, text) = service::http_get(listen, &format!("/api/v1/query?query={q}"));
        let body = &text[text.find('{')?..];
        (status == 200).then(|| serde_json::from_str(body).ok())?
    };
    // Every target scraped and up.
    let up_count = || -> Option<(usize, usize)> {
        let result = query("up")?["data"]["result"].as_array()?.clone();
        let up = result.iter().filter(|r| r["value"][1] == "1").count();
        Some((up, result.len()))
    };
    let wanted = Some((jobs.len(), jobs.len()));
    let waited = std::panic::catch_unwind(|| {
        service::wait_until(
            Duration::from_secs(60),
            "Prometheus to scrape every lab service",
            || up_count() == wanted,
        )
    });
    let seen = up_count();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(
        waited.is_ok(),
        "up (scraped, total): {seen:?}, wanted {wanted:?}; see {}",
        dir.join("prometheus.log").display()
    );
}
