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
    let scenario = if scenario.starts_with('/') {
        scenario.to_owned()
    } else if scenario.starts_with("uac-register") {
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
    let sbc_port = common::free_port("127.0.10.9");
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
    let (callee_port, caller_port) = (
        common::free_port("127.0.10.6"),
        common::free_port("127.0.10.5"),
    );
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
    // The callee waits on the port it registered from; the caller dials trader02's
    // line 7101.
    let turret = |device: &str, password: &str, ip: &str, port: u16, scenario: &str, field| {
        spawn_turret(sip, &dir, scenario, device, password, ip, port, field, &[])
    };
    let callee = turret(
        "dev-T-0002",
        "pass-two",
        "127.0.10.6",
        callee_port,
        "uas-answer.xml",
        None,
    );
    listening("127.0.10.6", callee_port);
    let caller = turret(
        "dev-T-0001",
        "pass-one",
        "127.0.10.5",
        caller_port,
        "uac-call.xml",
        Some("7101"),
    );
    passed("caller", caller);
    passed("callee", callee);

    // An external number goes to the SBC (a SIPp stand-in answering).
    let sbc = turret("sbc", "-", "127.0.10.9", sbc_port, "uas-answer.xml", None);
    listening("127.0.10.9", sbc_port);
    let caller = turret(
        "dev-T-0001",
        "pass-one",
        "127.0.10.5",
        caller_port,
        "uac-call.xml",
        Some("0142685300"),
    );
    passed("external call", caller);
    passed("SBC stand-in", sbc);

    // Refused: a number the dial plan refuses, and any call from an unregistered address.
    let refused = turret(
        "dev-T-0001",
        "pass-one",
        "127.0.10.5",
        caller_port,
        "uac-call-refused.xml",
        Some("0899123456"),
    );
    passed("premium refused 403", refused);
    let stranger = common::free_port("127.0.10.7");
    let refused = turret(
        "dev-T-0001",
        "pass-one",
        "127.0.10.7",
        stranger,
        "uac-call-refused.xml",
        Some("7101"),
    );
    passed("stranger refused 403", refused);
    assert!(service::terminate(tpo).success());
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts a SIPp turret running `scenario` as `device` from `ip:port` in `dir`, with
/// `field` as its `-inf` field0 when given and `extra` arguments.
#[allow(clippy::too_many_arguments)] // one SIPp command line
fn spawn_turret(
    tpo: SocketAddr,
    dir: &std::path::Path,
    scenario: &str,
    device: &str,
    password: &str,
    ip: &str,
    port: u16,
    field: Option<&str>,
    extra: &[&str],
) -> std::process::Child {
    let dir = dir.join(format!("{device}-{scenario}"));
    std::fs::create_dir_all(&dir).unwrap();
    // SIPp does not expand fields inside a regexp: the expected value is written into
    // a copy of the scenario.
    let source = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&source).unwrap();
    let copy = dir.join(scenario);
    std::fs::write(
        &copy,
        text.replace(
            "[field0]\" search_in",
            &format!("{}\" search_in", field.unwrap_or("")),
        ),
    )
    .unwrap();
    let copy = copy.display().to_string();
    let mut args = sipp_args(tpo, &copy, device, password, ip, port);
    if let Some(field) = field {
        let inf = dir.join("field.csv");
        std::fs::write(&inf, format!("SEQUENTIAL\n{field};\n")).unwrap();
        args.extend(["-inf".to_string(), inf.display().to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    Command::new("sipp")
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a SIPp turret and checks it passed.
fn passed(what: &str, child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", sipp::tail(&out));
}

#[test]
fn shared_lines_ring_everywhere_private_wires_ring_down_and_peers_fork() {
    if !sipp::sipp_available() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, _fixture) = common::serve(&runtime, common::floor(1));
    let dir = sipp::scratch("tpo-lines");
    let a_sip: SocketAddr = format!("127.0.11.1:{}", common::free_port("127.0.11.1"))
        .parse()
        .unwrap();
    let b_sip: SocketAddr = format!("127.0.11.2:{}", common::free_port("127.0.11.2"))
        .parse()
        .unwrap();
    let peers = format!("[\"{a_sip}\", \"{b_sip}\"]");
    let (a_spool, b_spool) = (dir.join("spool-a"), dir.join("spool-b"));
    let tpo_a = common::start_tpo(tss, a_sip, &peers, &a_spool, (43000, 43499), &[]);
    let tpo_b = common::start_tpo(tss, b_sip, &peers, &b_spool, (43500, 43999), &[]);
    let peer_up = |tpo: &service::Service, peer: SocketAddr| {
        service::metric(
            tpo.admin,
            &format!("floorwire_tpo_peer_up{{peer=\"{peer}\"}}"),
        )
    };
    service::wait_until(Duration::from_secs(10), "peers up", || {
        peer_up(&tpo_a, b_sip) == Some(1.0) && peer_up(&tpo_b, a_sip) == Some(1.0)
    });

    // trader01..03 register on A, trader04 on B.
    let turret = |n: u16| {
        let ip = format!("127.0.12.{n}");
        let port = common::free_port(&ip);
        (format!("dev-T-000{n}"), format!("pass-{n}"), ip, port)
    };
    let turrets: Vec<_> = (1..=4).map(turret).collect();
    for (i, (device, password, ip, port)) in turrets.iter().enumerate() {
        let tpo = if i == 3 { b_sip } else { a_sip };
        register(tpo, &dir, device, password, ip, *port);
    }
    let t = |n: usize| {
        let (d, p, ip, port) = &turrets[n - 1];
        (d.as_str(), p.as_str(), ip.as_str(), *port)
    };
    let uas = |n: usize, tpo: SocketAddr, scenario: &str, field: Option<&str>| {
        let (device, password, ip, port) = t(n);
        let child = spawn_turret(tpo, &dir, scenario, device, password, ip, port, field, &[]);
        listening(ip, port);
        child
    };
    let call = |number: &str| {
        let (device, password, ip, port) = t(1);
        let child = spawn_turret(
            a_sip,
            &dir,
            "uac-call.xml",
            device,
            password,
            ip,
            port,
            Some(number),
            &[],
        );
        passed(&format!("trader01 calls {number}"), child);
    };

    // A shared line on one TPO: trader02 answers, trader03 rang, is cancelled and told.
    let answers = uas(2, a_sip, "uas-answer.xml", None);
    let rings = uas(3, a_sip, "uas-ring-cancelled.xml", Some("trader02"));
    call("7100");
    passed("trader02 answers 7100", answers);
    passed("trader03 cancelled and told", rings);

    // A shared line across peers: trader04 on B answers, trader02 on A is told.
    let answers = uas(4, b_sip, "uas-answer.xml", None);
    let rings = uas(2, a_sip, "uas-ring-cancelled.xml", Some("trader04"));
    call("7300");
    passed("trader04 answers 7300 through the peer", answers);
    passed("trader02 told trader04 answered", rings);
    // And the other way: trader02 on A answers, trader04 on B hears it through B.
    let answers = uas(2, a_sip, "uas-answer.xml", None);
    let rings = uas(4, b_sip, "uas-ring-cancelled.xml", Some("trader02"));
    call("7300");
    passed("trader02 answers 7300", answers);
    passed(
        "trader04 told through the peer that trader02 answered",
        rings,
    );

    // Seizing the private wire rings its far end; the intercom's answers by itself.
    let answers = uas(2, a_sip, "uas-answer.xml", None);
    call("7001");
    passed("the private wire rang down to trader02", answers);
    let answers = uas(3, a_sip, "uas-auto-answer.xml", None);
    call("7201");
    passed("the intercom auto-answered at trader03", answers);
    let answers = uas(4, b_sip, "uas-auto-answer.xml", None);
    call("7203");
    passed(
        "the intercom auto-answered at trader04 through the peer",
        answers,
    );

    // B stops: A stops forking to it and calls go on at once.
    assert!(service::terminate(tpo_b).success());
    service::wait_until(Duration::from_secs(5), "peer B down", || {
        peer_up(&tpo_a, b_sip) == Some(0.0)
    });
    let answers = uas(2, a_sip, "uas-answer.xml", None);
    let started = std::time::Instant::now();
    call("7300");
    passed("trader02 answers 7300 with B down", answers);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a dead peer held the call {:?}",
        started.elapsed()
    );

    // Every call left a record on A's spool (the fixture TSS takes none).
    service::wait_until(Duration::from_secs(5), "seven records", || {
        common::spooled(&a_spool).len() >= 7
    });
    let records = common::spooled(&a_spool);
    let summary: Vec<(String, String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r["line"].as_str().unwrap_or("-").to_owned(),
                r["user"].as_str().unwrap_or("-").to_owned(),
                r["direction"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |line: &str| {
        (
            line.to_owned(),
            "trader01".to_owned(),
            "internal".to_owned(),
            "answered".to_owned(),
        )
    };
    assert_eq!(
        summary,
        vec![
            expect("SH-FX"),
            expect("SH-RATES"),
            expect("SH-RATES"),
            expect("PW-GS"),
            expect("IC-1"),
            expect("IC-2"),
            expect("SH-RATES"),
        ],
        "{records:#?}"
    );
    for r in &records {
        assert_eq!(r["calling"], "dev-T-0001");
        assert!(
            r["answered_at"].is_string() && r["ended_at"].is_string(),
            "{r}"
        );
    }
    assert!(service::terminate(tpo_a).success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cancel_callee_bye_hold_resume_and_load_shedding_through_the_tpo() {
    if !sipp::sipp_available() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, _fixture) = common::serve(&runtime, common::config(1, "pass-one", "pass-two"));
    let dir = sipp::scratch("tpo-flows");
    let sip: SocketAddr = format!("127.0.13.10:{}", common::free_port("127.0.13.10"))
        .parse()
        .unwrap();
    let spool = dir.join("spool");
    // One call at a time, so the load test needs only one call up.
    let tpo = common::start_tpo(
        tss,
        sip,
        "[]",
        &spool,
        (44000, 44499),
        &[
            ("TPO__CALLS__MAX_CALLS", "1"),
            ("TPO__MEDIA__RTP_TIMEOUT_SECS", "2"),
        ],
    );
    let caller = (
        "dev-T-0001",
        "pass-one",
        "127.0.13.1",
        common::free_port("127.0.13.1"),
    );
    let second = (
        "dev-T-0001",
        "pass-one",
        "127.0.13.3",
        common::free_port("127.0.13.3"),
    );
    let callee = (
        "dev-T-0002",
        "pass-two",
        "127.0.13.2",
        common::free_port("127.0.13.2"),
    );
    for (device, password, ip, port) in [caller, second, callee] {
        register(sip, &dir, device, password, ip, port);
    }
    let run =
        |who: (&str, &str, &str, u16), scenario: &str, field: Option<&str>, extra: &[&str]| {
            let (device, password, ip, port) = who;
            let child = spawn_turret(
                sip, &dir, scenario, device, password, ip, port, field, extra,
            );
            listening(ip, port);
            child
        };
    let calls_active = || service::metric(tpo.admin, "floorwire_tpo_calls_active");

    for (callee_scenario, caller_scenario, what) in [
        (
            "uas-ring-until-cancel.xml",
            "uac-call-cancel.xml",
            "the caller cancels",
        ),
        (
            "uas-answer-then-bye.xml",
            "uac-call-bye-received.xml",
            "the callee hangs up",
        ),
        (
            "uas-answer-hold.xml",
            "uac-call-hold.xml",
            "hold and resume",
        ),
        // No RTP at all: after 2 s the TPO hangs both legs up.
        (
            "uas-answer.xml",
            "uac-call-bye-received.xml",
            "a silent call is hung up",
        ),
    ] {
        let answering = run(callee, callee_scenario, None, &[]);
        let calling = run(caller, caller_scenario, Some("7101"), &[]);
        passed(&format!("{what}: caller"), calling);
        passed(&format!("{what}: callee"), answering);
        service::wait_until(Duration::from_secs(5), "the call gone", || {
            calls_active() == Some(0.0)
        });
    }

    // At the limit, a new INVITE gets 503 + Retry-After; the call up carries on.
    let answering = run(callee, "uas-ring-until-cancel.xml", None, &[]);
    let calling = run(caller, "uac-call-cancel.xml", Some("7101"), &["-d", "3000"]);
    service::wait_until(Duration::from_secs(5), "one call up", || {
        calls_active() == Some(1.0)
    });
    let shed = run(second, "uac-call-shed.xml", Some("7101"), &[]);
    passed("a call past the limit is shed", shed);
    passed("the call up carries on: caller", calling);
    passed("the call up carries on: callee", answering);

    // Each call left its record: cancelled, answered three times, cancelled (the shed
    // INVITE is load, not a call).
    service::wait_until(Duration::from_secs(5), "five records", || {
        common::spooled(&spool).len() >= 5
    });
    let outcomes: Vec<String> = common::spooled(&spool)
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        ["cancelled", "answered", "answered", "answered", "cancelled"]
    );
    assert_eq!(
        service::metric(tpo.admin, "floorwire_tpo_calls_answered_total"),
        Some(3.0)
    );
    assert!(service::terminate(tpo).success());
    let _ = std::fs::remove_dir_all(dir);
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_calls_leave_no_port_state_or_memory_behind() {
    if !sipp::sipp_available() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, _fixture) = common::serve(&runtime, common::config(1, "pass-one", "pass-two"));
    let dir = sipp::scratch("tpo-leak");
    let sip: SocketAddr = format!("127.0.16.10:{}", common::free_port("127.0.16.10"))
        .parse()
        .unwrap();
    let spool = dir.join("spool");
    // 500 port pairs: 250 calls at once at most.
    let tpo = common::start_tpo(tss, sip, "[]", &spool, (46000, 46999), &[]);
    let metric = |name: &str| service::metric(tpo.admin, name).unwrap_or(-1.0);
    assert_eq!(metric("floorwire_tpo_rtp_port_pairs_free"), 500.0);
    let caller = (
        "dev-T-0001",
        "pass-one",
        "127.0.16.1",
        common::free_port("127.0.16.1"),
    );
    let callee = (
        "dev-T-0002",
        "pass-two",
        "127.0.16.2",
        common::free_port("127.0.16.2"),
    );
    for (device, password, ip, port) in [caller, callee] {
        register(sip, &dir, device, password, ip, port);
    }
    // A first run as large as the measured one brings the allocator to its working
    // size (freed memory is kept for reuse, not given back); the measured run must
    // then fit in it.
    const CALLS: u32 = 10_000;
    let (device, password, ip, port) = callee;
    let total = (2 * CALLS).to_string();
    let answering = spawn_turret(
        sip,
        &dir,
        "uas-answer.xml",
        device,
        password,
        ip,
        port,
        None,
        &["-m", &total, "-timeout", "600s"],
    );
    listening(ip, port);
    let run_calls = || {
        let (device, password, ip, port) = caller;
        let count = CALLS.to_string();
        // At most 150 calls at once, 500 new ones a second: bounded in count and time.
        let calling = spawn_turret(
            sip,
            &dir,
            "uac-call.xml",
            device,
            password,
            ip,
            port,
            Some("7101"),
            &["-m", &count, "-r", "500", "-l", "150", "-timeout", "240s"],
        );
        passed(&format!("{count} calls"), calling);
        service::wait_until(Duration::from_secs(30), "every call over", || {
            metric("floorwire_tpo_calls_active") == 0.0
        });
        // Finished transactions linger up to 64*T1 (32 s) to absorb retransmissions.
        service::wait_until(Duration::from_secs(60), "every transaction over", || {
            metric("floorwire_sip_transactions") == 0.0
        });
        // The heap gauge is read from jemalloc at each scrape.
        (
            metric("floorwire_tpo_heap_allocated_bytes"),
            rss_kib(tpo.child.id()),
        )
    };
    let warm = run_calls();
    let after = run_calls();
    passed("the callee answered every call", answering);
    assert_eq!(
        metric("floorwire_tpo_calls_answered_total"),
        f64::from(2 * CALLS)
    );
    // Every port pair back in the pool, no per-call state left in the B2BUA.
    let state = [
        "floorwire_tpo_rtp_port_pairs_free",
        "floorwire_tpo_rtp_calls",
        "floorwire_tpo_calls_state_entries",
        "floorwire_tpo_calls_active",
        "floorwire_sip_transactions",
    ]
    .map(|name| format!("{name} {}", metric(name)));
    assert_eq!(
        metric("floorwire_tpo_rtp_port_pairs_free"),
        500.0,
        "ports left behind: {state:?}"
    );
    assert_eq!(metric("floorwire_tpo_rtp_calls"), 0.0, "{state:?}");
    assert_eq!(
        metric("floorwire_tpo_calls_state_entries"),
        0.0,
        "{state:?}"
    );
    // Memory: the heap in use after the measured 10,000 calls may not exceed what it
    // was after the first 10,000 by 300 bytes a call (3 MB in all; jemalloc's figure
    // moves by about 1 MB between runs as thread caches flush). A leaked call
    // snapshot, dialog or record is 1–2 KB each: 10–20 MB here. The resident size is
    // reported beside it (it also holds the allocator's free pages).
    let ((heap_warm, rss_warm), (heap_after, rss_after)) = (warm, after);
    eprintln!(
        "TPO heap in use: {heap_warm} bytes after {CALLS} calls, {heap_after} after {CALLS} more \
         (resident {rss_warm} KiB, then {rss_after} KiB)"
    );
    assert!(heap_warm > 0.0, "the heap gauge reads jemalloc's figures");
    assert!(
        heap_after <= heap_warm + 3_000_000.0,
        "heap in use grew from {heap_warm} to {heap_after} bytes over {CALLS} calls"
    );
    assert!(service::terminate(tpo).success());
    let _ = std::fs::remove_dir_all(dir);
}
