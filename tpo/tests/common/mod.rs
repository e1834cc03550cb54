//! A TSS API fixture for the TPO's tests: `/api/tpo/config` with the revision ETag
//! (304 when unchanged) and the bearer token checked; the configuration can be
//! swapped while the TPO runs.

#![allow(dead_code)] // each test binary uses a subset
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value;

pub const TOKEN: &str = "tpo-token-1";

#[derive(Clone, Default)]
pub struct Fixture {
    pub config: Arc<Mutex<Value>>,
    pub full: Arc<AtomicUsize>,
    pub not_modified: Arc<AtomicUsize>,
}

async fn tpo_config(State(f): State<Fixture>, headers: HeaderMap) -> axum::response::Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body = f.config.lock().unwrap().clone();
    let etag = format!("\"rev-{}\"", body["revision"]);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        f.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    f.full.fetch_add(1, Ordering::Relaxed);
    ([(header::ETAG, etag)], axum::Json(body)).into_response()
}

/// Serves `config` on a loopback port of `runtime`.
pub fn serve(runtime: &tokio::runtime::Runtime, config: Value) -> (SocketAddr, Fixture) {
    let fixture = Fixture::default();
    *fixture.config.lock().unwrap() = config;
    let app = axum::Router::new()
        .route("/api/tpo/config", axum::routing::get(tpo_config))
        .with_state(fixture.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, fixture)
}

pub const REALM: &str = "floorwire";

/// A small floor: trader01 (device dev-T-0001: PW-GS 7001, SH-FX +33142685300) and
/// trader02 (device dev-T-0002: DT-1 7101); numbers starting 7 are internal, 0 and +
/// go to the SBC, 08 is refused.
pub fn config(revision: i64, password_1: &str, password_2: &str) -> Value {
    use floorwire::sip::auth::{Algorithm, ha1};
    let device = |name: &str, id: &str, user: &str, password: &str| {
        serde_json::json!({
            "username": name, "device_id": id, "user": user, "realm": REALM,
            "ha1_md5": ha1(Algorithm::Md5, name, REALM, password),
            "ha1_sha256": ha1(Algorithm::Sha256, name, REALM, password),
        })
    };
    serde_json::json!({
        "revision": revision,
        "devices": [
            device("dev-T-0001", "T-0001", "trader01", password_1),
            device("dev-T-0002", "T-0002", "trader02", password_2),
        ],
        "lines": [
            {"id": "PW-GS", "kind": "private_wire_ard", "number": "7001", "label": "GS", "far_end": "7002"},
            {"id": "SH-FX", "kind": "shared", "number": "+33142685300", "label": "FX"},
            {"id": "DT-1", "kind": "dial_tone", "number": "7101", "label": "DT"}
        ],
        "appearances": [
            {"user": "trader01", "line": "PW-GS", "access": "talk", "button": 1},
            {"user": "trader01", "line": "SH-FX", "access": "talk", "button": 2},
            {"user": "trader02", "line": "DT-1", "access": "talk", "button": 1}
        ],
        "dial_plan": [
            {"prefix": "7", "route": "internal"},
            {"prefix": "0", "route": "sbc"},
            {"prefix": "+", "route": "sbc"},
            {"prefix": "08", "route": "refuse"}
        ],
        "sites": [], "users": [], "turrets": []
    })
}

/// A floor for line tests: trader01…trader04 (devices dev-T-0001…4, passwords
/// `pass-N`). Lines: SH-FX 7100 (shared, talk on trader02 and trader03, listen on
/// trader01), SH-RATES 7300 (shared, trader02 and trader04), private wire PW-GS 7001
/// (trader01) ringing down to PW-GS-B 7002 (trader02), intercoms IC-1 7201 (trader01)
/// to IC-1-B 7202 (trader03) and IC-2 7203 (trader01) to IC-2-B 7204 (trader04).
pub fn floor(revision: i64) -> Value {
    use floorwire::sip::auth::{Algorithm, ha1};
    let devices: Vec<Value> = (1..=4)
        .map(|n| {
            let name = format!("dev-T-000{n}");
            let password = format!("pass-{n}");
            serde_json::json!({
                "username": name, "device_id": format!("T-000{n}"),
                "user": format!("trader0{n}"), "realm": REALM,
                "ha1_md5": ha1(Algorithm::Md5, &name, REALM, &password),
                "ha1_sha256": ha1(Algorithm::Sha256, &name, REALM, &password),
            })
        })
        .collect();
    let appearance = |user: &str, line: &str, access: &str| serde_json::json!({"user": user, "line": line, "access": access, "button": 1});
    serde_json::json!({
        "revision": revision,
        "devices": devices,
        "lines": [
            {"id": "SH-FX", "kind": "shared", "number": "7100", "label": "FX"},
            {"id": "SH-RATES", "kind": "shared", "number": "7300", "label": "Rates"},
            {"id": "PW-GS", "kind": "private_wire_ard", "number": "7001", "label": "GS", "far_end": "7002"},
            {"id": "PW-GS-B", "kind": "private_wire_ard", "number": "7002", "label": "GS", "far_end": "7001"},
            {"id": "IC-1", "kind": "intercom", "number": "7201", "label": "Desk", "far_end": "7202"},
            {"id": "IC-1-B", "kind": "intercom", "number": "7202", "label": "Desk"},
            {"id": "IC-2", "kind": "intercom", "number": "7203", "label": "Lyon", "far_end": "7204"},
            {"id": "IC-2-B", "kind": "intercom", "number": "7204", "label": "Paris"}
        ],
        "appearances": [
            appearance("trader01", "SH-FX", "listen"),
            appearance("trader02", "SH-FX", "talk"),
            appearance("trader03", "SH-FX", "talk"),
            appearance("trader02", "SH-RATES", "talk"),
            appearance("trader04", "SH-RATES", "talk"),
            appearance("trader01", "PW-GS", "talk"),
            appearance("trader02", "PW-GS-B", "talk"),
            appearance("trader01", "IC-1", "talk"),
            appearance("trader03", "IC-1-B", "talk"),
            appearance("trader01", "IC-2", "talk"),
            appearance("trader04", "IC-2-B", "talk")
        ],
        "dial_plan": [{"prefix": "7", "route": "internal"}],
        "sites": [], "users": [], "turrets": []
    })
}

/// The call records waiting in the TPO's spool at `spool` (the fixture TSS takes
/// none), oldest first.
pub fn spooled(spool: &std::path::Path) -> Vec<Value> {
    let mut records: Vec<Value> = std::fs::read_dir(spool)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    records.sort_by_key(|r| r["started_at"].as_str().unwrap_or_default().to_owned());
    records
}

/// A TPO (the real binary) on `sip` with the fixture TSS at `tss`, its peers, spool
/// and RTP range, waiting until it has the configuration; `extra_env` on top.
pub fn start_tpo(
    tss: SocketAddr,
    sip: SocketAddr,
    peers: &str,
    spool: &std::path::Path,
    media: (u16, u16),
    extra_env: &[(&str, &str)],
) -> crate::service::Service {
    let url = format!("http://{tss}");
    let (sip, spool) = (sip.to_string(), spool.display().to_string());
    let (first, last) = (media.0.to_string(), media.1.to_string());
    let env = [
        ("TPO__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TPO__SIP__LISTEN", sip.as_str()),
        ("TPO__TSS__URL", url.as_str()),
        ("TPO__TSS__TOKEN", TOKEN),
        ("TPO__TSS__POLL_INTERVAL_MS", "100"),
        ("TPO__CALL_RECORDS__SPOOL_DIR", spool.as_str()),
        ("TPO__MEDIA__FIRST_PORT", first.as_str()),
        ("TPO__MEDIA__LAST_PORT", last.as_str()),
        ("TPO__PEERS__ADDRESSES", peers),
        ("TPO__PEERS__PROBE_INTERVAL_MS", "100"),
        ("TPO__PEERS__DEAD_AFTER_MS", "500"),
    ];
    let env: Vec<(&str, &str)> = env.iter().chain(extra_env).copied().collect();
    let tpo = crate::service::start(env!("CARGO_BIN_EXE_tpo"), &env);
    crate::service::wait_until(std::time::Duration::from_secs(10), "configuration", || {
        crate::service::metric(tpo.admin, "floorwire_tpo_config_revision") == Some(1.0)
    });
    tpo
}

pub use crate::service::free_port;
