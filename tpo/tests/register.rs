//! The real `tpo` binary as a registrar: configuration polled from a TSS API fixture
//! (ETag, 304), SIPp registering with digest against the TSS-minted HA1, wrong
//! passwords 403, a credential changed at the TSS taking effect live, OPTIONS
//! answered, registered devices and lines in the metrics.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

#[path = "../../floorwire/tests/common/mod.rs"]
mod sipp;

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::atomic::Ordering;

use common::REALM;
use common::TOKEN;

fn metric(admin: SocketAddr, name: &str) -> f64 {
    service::metric(admin, name).unwrap_or(-1.0)
}

fn register(tpo_sip: SocketAddr, password: &str, scenario: &str) -> std::process::Output {
    let dir = sipp::scratch(&format!("tpo-register-{}", scenario.len()));
    let scenario = format!(
        "{}/../floorwire/tests/sipp/{scenario}",
        env!("CARGO_MANIFEST_DIR")
    );
    let args: Vec<String> = [
        tpo_sip.to_string().as_str(),
        "-sf",
        &scenario,
        "-s",
        "dev-T-0001",
        "-au",
        "dev-T-0001",
        "-ap",
        password,
        "-i",
        "127.0.10.5",
        "-p",
        &sipp::free_udp_port().to_string(),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "20s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = sipp::run_sipp(&args, &dir);
    let _ = std::fs::remove_dir_all(dir);
    out
}

#[test]
fn sipp_registers_with_tss_minted_credentials() {
    if !sipp::sipp_available() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, fixture) = common::serve(&runtime, common::config(7, "first-password", "other"));
    let url = format!("http://{tss}");
    let spool = std::env::temp_dir()
        .join(format!("floorwire-tpo-reg-spool-{}", std::process::id()))
        .display()
        .to_string();
    let env = [
        ("TPO__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TPO__SIP__LISTEN", "127.0.0.1:0"),
        ("TPO__TSS__URL", url.as_str()),
        ("TPO__TSS__TOKEN", TOKEN),
        ("TPO__TSS__POLL_INTERVAL_MS", "100"),
        ("TPO__CALL_RECORDS__SPOOL_DIR", spool.as_str()),
    ];
    let tpo = service::start(env!("CARGO_BIN_EXE_tpo"), &env);
    let sip = service::ready_endpoint(&tpo.ready, "sip").expect("sip= in the ready line");
    service::wait_until(Duration::from_secs(10), "configuration revision 7", || {
        metric(tpo.admin, "floorwire_tpo_config_revision") == 7.0
    });

    // OPTIONS keepalive: 200 with Allow.
    let udp = std::net::UdpSocket::bind("127.0.10.5:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = udp.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ka-1\r\nFrom: <sip:dev-T-0001@{local}>;tag=ka1\r\n\
         To: <sip:{sip}>\r\nCall-ID: ka-1@{local}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    udp.send_to(options.as_bytes(), sip).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
    assert!(reply.contains("REGISTER"), "Allow lists REGISTER: {reply}");

    // The right password registers; the device's lines count as registered.
    let out = register(sip, "first-password", "uac-register-digest.xml");
    assert!(out.status.success(), "{}", sipp::tail(&out));
    assert_eq!(metric(tpo.admin, "floorwire_tpo_registered_devices"), 1.0);
    assert_eq!(metric(tpo.admin, "floorwire_tpo_registered_lines"), 2.0);
    let out = register(sip, "wrong-password", "uac-register-digest-refused.xml");
    assert!(
        out.status.success(),
        "wrong password answered 403: {}",
        sipp::tail(&out)
    );

    // The TSS mints a new credential: the TPO follows within a poll.
    *fixture.config.lock().unwrap() = common::config(8, "second-password", "other");
    service::wait_until(Duration::from_secs(10), "configuration revision 8", || {
        metric(tpo.admin, "floorwire_tpo_config_revision") == 8.0
    });
    let out = register(sip, "first-password", "uac-register-digest-refused.xml");
    assert!(
        out.status.success(),
        "the old password is refused: {}",
        sipp::tail(&out)
    );
    let out = register(sip, "second-password", "uac-register-digest.xml");
    assert!(out.status.success(), "{}", sipp::tail(&out));

    // Unchanged store: the poll costs a 304, not the whole configuration.
    assert_eq!(
        fixture.full.load(Ordering::Relaxed),
        2,
        "one full fetch per revision"
    );
    assert!(fixture.not_modified.load(Ordering::Relaxed) >= 2);
    let page = service::http_get(tpo.admin, "/metrics").1;
    assert!(
        page.contains("floorwire_tpo_registrations_total{result=\"bound\"} 2"),
        "{page}"
    );
    assert!(
        page.contains("floorwire_tpo_registrations_total{result=\"forbidden\"} 2"),
        "{page}"
    );
    assert!(service::terminate(tpo).success());
}

/// The real TSS (in-process, HTTPS with a certificate from a test CA, seeded with the
/// shared floor fixture) as the configuration source: the TPO checks the TSS's
/// certificate, fetches the HA1 the TSS minted, and SIPp registers with it.
#[test]
fn registers_against_the_real_tss_over_https() {
    if !sipp::sipp_available() {
        return;
    }
    floorwire::service::tls::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("floorwire-tpo-tss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A CA and a certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let text = tss::DEFAULT_CONFIG;
    let url = format!("sqlite://{}?mode=rwc", dir.join("tss.sqlite3").display());
    let vars: Vec<(String, String)> = [
        ("TSS__STORE__URL", url.as_str()),
        ("TSS__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TSS__API__LISTEN", "127.0.0.1:0"),
        ("TSS__API__CERT_FILE", &cert_path.display().to_string()),
        ("TSS__API__KEY_FILE", &key_path.display().to_string()),
        ("TSS__API__TPO_TOKENS", &format!("[\"{TOKEN}\"]")),
        ("TSS__FTPES__ENABLED", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config: tss::Config =
        floorwire::service::config::parse(text, std::path::Path::new("embedded"), "TSS", &vars)
            .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Seed the floor and mint trader01's turret credential, as its FTPES login would.
    let password = runtime.block_on(async {
        let store = tss::open_store(&config.store).await.unwrap();
        let seed = tss::seed::parse(include_str!("../../tss/tests/fixtures/floor.json")).unwrap();
        tss::seed::apply(&store, &seed, "seed").await.unwrap();
        let mut w = store.write("test").await.unwrap();
        let credential = w.mint_sip_credential("T-0001", REALM, None).await.unwrap();
        w.commit().await.unwrap();
        store.close().await;
        credential.password
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = shutdown.clone();
    let tss_task = runtime.spawn(async move {
        tss::run(config, stop, move |bound| {
            let _ = tx.send(bound.api);
        })
        .await
    });
    let api = rx.recv_timeout(Duration::from_secs(30)).expect("tss is up");

    let tss_url = format!("https://{api}");
    let spool = dir.join("spool").display().to_string();
    let ca = ca_path.display().to_string();
    let env = [
        ("TPO__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TPO__SIP__LISTEN", "127.0.0.1:0"),
        ("TPO__TSS__URL", tss_url.as_str()),
        ("TPO__TSS__TOKEN", TOKEN),
        ("TPO__TSS__CA_FILE", ca.as_str()),
        ("TPO__TSS__POLL_INTERVAL_MS", "200"),
        ("TPO__CALL_RECORDS__SPOOL_DIR", spool.as_str()),
    ];
    let tpo = service::start(env!("CARGO_BIN_EXE_tpo"), &env);
    let sip = service::ready_endpoint(&tpo.ready, "sip").unwrap();
    service::wait_until(
        Duration::from_secs(10),
        "configuration from the TSS",
        || metric(tpo.admin, "floorwire_tpo_config_revision") >= 2.0,
    );
    let out = register(sip, &password, "uac-register-digest.xml");
    assert!(out.status.success(), "{}", sipp::tail(&out));
    assert_eq!(metric(tpo.admin, "floorwire_tpo_registered_devices"), 1.0);
    // trader01's turret carries PW-GS, SH-FX and HOOT-1 (floor.json).
    assert_eq!(metric(tpo.admin, "floorwire_tpo_registered_lines"), 3.0);
    assert!(service::terminate(tpo).success());
    shutdown.cancel();
    runtime.block_on(tss_task).unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// With `tss.url` down, the TPO takes its configuration from the next TSS of
/// `tss.fallback_urls` (the lab's TSS-loss scenario relies on it).
#[test]
fn configuration_comes_from_a_fallback_tss_when_the_first_is_down() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, _fixture) = common::serve(&runtime, common::config(1, "pass-one", "pass-two"));
    // A port nothing listens on: the first TSS is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("floorwire-tpo-fallback-{}", std::process::id()));
    let sip: SocketAddr = format!("127.0.0.1:{}", common::free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let (dead_url, fallback) = (format!("http://{dead}"), format!("[\"http://{tss}\"]"));
    // start_tpo waits for revision 1: only the fallback can give it.
    let tpo = common::start_tpo(
        tss,
        sip,
        "[]",
        &dir.join("spool"),
        (46000, 46099),
        &[
            ("TPO__TSS__URL", dead_url.as_str()),
            ("TPO__TSS__FALLBACK_URLS", fallback.as_str()),
        ],
    );
    assert_eq!(metric(tpo.admin, "floorwire_tpo_config_revision"), 1.0);
    service::terminate(tpo);
    let _ = std::fs::remove_dir_all(&dir);
}
