//! The real `tss` binary on every store backend, driven by curl: admin auth and its
//! throttle, whole-or-nothing profile edits with the field named, versions and diffs,
//! CSV import/export, idempotent call records and reports, the TPO config with ETag.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const TSS: &str = env!("CARGO_BIN_EXE_tss");
const TOKEN: &str = "tpo-secret-1";

/// One curl call: (status, headers, body). `extra` are curl arguments.
fn curl(method: &str, url: &str, extra: &[&str], body: Option<&str>) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-D", "-", "-X", method, url, "--max-time", "20"])
        .args(extra);
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is installed (deploy/test.sh installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        if let Some(b) = body {
            stdin.write_all(b.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

struct Api {
    base: String,
}

impl Api {
    fn call(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String, Value) {
        let url = format!("{}{path}", self.base);
        let mut extra = vec![];
        let cred;
        if let Some(u) = user {
            cred = u.to_owned();
            extra.extend(["-u", cred.as_str()]);
        }
        if body.is_some() {
            extra.extend(["-H", "content-type: application/json"]);
        }
        let (status, head, text) = curl(method, &url, &extra, body);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, head, value)
    }

    fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, _, v) = self.call(method, path, Some("admin:admin-pass"), body);
        (status, v)
    }

    fn tpo(
        &self,
        method: &str,
        path: &str,
        extra: &[&str],
        body: Option<&str>,
    ) -> (u16, String, String) {
        let url = format!("{}{path}", self.base);
        let auth = format!("authorization: Bearer {TOKEN}");
        let mut args = vec!["-H", auth.as_str(), "-H", "content-type: application/json"];
        args.extend_from_slice(extra);
        curl(method, &url, &args, body)
    }
}

fn env_for(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TSS__STORE__URL", url.to_owned()),
        ("TSS__ADMIN__LISTEN", "127.0.0.1:0".into()),
        ("TSS__API__LISTEN", "127.0.0.1:0".into()),
        ("TSS__API__TLS", "false".into()),
        ("TSS__FTPES__LISTEN", "127.0.0.1:0".into()),
        ("TSS__API__TPO_TOKENS", format!("[\"{TOKEN}\"]")),
        ("TSS__LOGIN__MAX_FAILURES", "5".into()),
    ]
}

fn exercise(backend: &str, url: &str) {
    let env = env_for(url);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Seed through the CLI (migrates the fresh database first).
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/floor.json");
    let out = Command::new(TSS)
        .args(["seed", fixture])
        .envs(env_refs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{backend} seed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revision 1"));
    let out = Command::new(TSS)
        .args(["migrate"])
        .envs(env_refs.iter().copied())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("store migrated: revision 1"),
        "{backend}"
    );

    let tss = service::start(TSS, &env_refs);
    let api_addr: SocketAddr =
        service::ready_endpoint(&tss.ready, "api").expect("api= in the ready line");
    let api = Api {
        base: format!("http://{api_addr}"),
    };

    // The OpenAPI document is public; everything else needs an admin.
    let (status, _, doc) = api.call("GET", "/api/openapi.json", None, None);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/tpo/config"].is_object());
    let (status, head, _) = api.call("GET", "/api/users", None, None);
    assert_eq!(status, 401, "{backend}");
    assert!(head.contains("www-authenticate: basic"), "{head}");
    let (status, _, _) = api.call("GET", "/api/users", Some("admin:wrong"), None);
    assert_eq!(status, 401);
    let (status, _, _) = api.call("GET", "/api/users", Some("trader01:t01-pass"), None);
    assert_eq!(status, 403, "a trader is not an admin");
    let (status, users) = api.admin("GET", "/api/users", None);
    assert_eq!(status, 200);
    assert_eq!(users.as_array().unwrap().len(), 3);
    // Errors axum answers itself come in the same JSON format.
    let (status, v) = api.admin("GET", "/api/reports/calls?colour=blue", None);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("colour"), "{v}");
    let (status, head, v) = api.call(
        "DELETE",
        "/api/openapi.json",
        Some("admin:admin-pass"),
        None,
    );
    assert_eq!(status, 405);
    assert!(
        v["error"].is_string() && head.contains("allow:"),
        "{head} {v}"
    );
    let (status, v) = api.admin("GET", "/api/nope", None);
    assert_eq!((status, v["error"].as_str()), (404, Some("no such route")));

    // A bad profile edit is refused whole, naming the field; the profile is untouched.
    let (_, before) = api.admin("GET", "/api/users/trader01/profile", None);
    let bad = r#"{"appearances":[{"line":"SH-FX","button":1},{"line":"NOPE","button":2}]}"#;
    let (status, v) = api.admin("PUT", "/api/users/trader01/profile", Some(bad));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["field"], "appearances[1].line");
    let (status, v) = api.admin(
        "PUT",
        "/api/users/trader01/profile",
        Some(r#"{"appearances":[{"line":"A","button":"one"}]}"#),
    );
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("appearances[0].button"))
    );
    let (_, after) = api.admin("GET", "/api/users/trader01/profile", None);
    assert_eq!(before, after);

    // A good edit makes a new version; the diff says what changed.
    let mut edit = before.clone();
    edit["speed_dials"][0]["label"] = json!("Operations");
    let (status, v) = api.admin(
        "PUT",
        "/api/users/trader01/profile",
        Some(&edit.to_string()),
    );
    assert_eq!(status, 200, "{v}");
    let (_, versions) = api.admin("GET", "/api/users/trader01/profile/versions", None);
    assert_eq!(versions.as_array().unwrap().len(), 2);
    assert_eq!(versions[1]["actor"], "admin");
    let (_, diff) = api.admin("GET", "/api/users/trader01/profile/diff?from=1", None);
    assert_eq!(
        diff["patch"],
        json!([{"op": "replace", "path": "/speed_dials/0/label", "value": "Operations"}])
    );
    let (_, old) = api.admin(
        "GET",
        "/api/users/trader01/profile/document?version=1",
        None,
    );
    assert_eq!(old["document"]["speed_dials"][0]["label"], "Ops");

    // Path and body keys must agree.
    let (status, v) = api.admin(
        "PUT",
        "/api/lines/X1",
        Some(r#"{"id":"X2","kind":"hoot","number":"7"}"#),
    );
    assert_eq!((status, v["field"].as_str()), (400, Some("id")));

    // CSV import is whole or nothing; the error names the file line and column.
    let url = format!("{}/api/import/lines", api.base);
    let csv_bad = "id,kind,number,label,far_end\nPW-NEW,private_wire_mrd,7010,Barclays,7011\nBAD,nope,7012,,\n";
    let (status, _, body) = curl(
        "POST",
        &url,
        &["-u", "admin:admin-pass", "-H", "content-type: text/csv"],
        Some(csv_bad),
    );
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["field"], "line 3.kind");
    let (status, _) = api.admin("GET", "/api/lines/PW-NEW", None);
    assert_eq!(status, 404, "{backend}: nothing of a refused import lands");
    let csv_good = "id,kind,number,label,far_end\nPW-NEW,private_wire_mrd,7010,Barclays,7011\nIC-1,intercom,7013,Desk intercom,\n";
    let (status, _, body) = curl(
        "POST",
        &url,
        &["-u", "admin:admin-pass", "-H", "content-type: text/csv"],
        Some(csv_good),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"imported\":2"), "{body}");
    let appearances = r#"[{"user":"trader02","line":"PW-NEW","button":5,"access":"listen"}]"#;
    let (status, v) = api.admin("POST", "/api/import/appearances", Some(appearances));
    assert_eq!(status, 200, "{v}");
    let url = format!("{}/api/export/appearances?format=csv", api.base);
    let (status, head, body) = curl("GET", &url, &["-u", "admin:admin-pass"], None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/csv"));
    assert!(body.starts_with("user,line,access,button\n"), "{body}");
    assert!(body.contains("trader02,PW-NEW,listen,5\n"), "{body}");

    // Call records: stored once however often a TPO posts them.
    let record = json!({
        "record_id": "tpo-1a-000001", "tpo": "tpo-1a", "call_id": "abc@127.0.1.21",
        "user": "trader01", "line": "SH-FX", "direction": "outbound",
        "calling": "7001", "called": "+33142685300",
        "started_at": "2026-11-30T09:00:00Z", "answered_at": "2026-11-30T09:00:03Z",
        "ended_at": "2026-11-30T09:02:03Z", "outcome": "answered", "recordings": ["r1", "r2"]
    })
    .to_string();
    let (status, _, _) = api.tpo("POST", "/api/call-records", &[], Some(&record));
    assert_eq!(status, 201, "{backend}");
    let (status, _, body) = api.tpo("POST", "/api/call-records", &[], Some(&record));
    assert_eq!(status, 200, "{body}");
    let url = format!("{}/api/call-records", api.base);
    let (status, _, _) = curl(
        "POST",
        &url,
        &[
            "-H",
            "authorization: Bearer wrong",
            "-H",
            "content-type: application/json",
        ],
        Some(&record),
    );
    assert_eq!(status, 401);
    let (status, v) = api.admin(
        "GET",
        "/api/reports/calls?user=trader01&from=2026-11-30T00:00:00Z",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(v["summary"]["calls"], 1);
    assert_eq!(v["summary"]["talk_seconds"], 120);
    let url = format!(
        "{}/api/reports/calls?number=%2B33142685300&format=csv",
        api.base
    );
    let (_, _, csv) = curl("GET", &url, &["-u", "admin:admin-pass"], None);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].contains("tpo-1a-000001") && lines[1].contains(",120,"),
        "{csv}"
    );

    // A batch: one result a record, in order; a refused record names its field and
    // does not keep the others out.
    let second = record
        .replace("tpo-1a-000001", "tpo-1a-000002")
        .replace("trader01", "trader02");
    let bad_times = record
        .replace("tpo-1a-000001", "tpo-1a-000003")
        .replace("09:02:03Z", "08:00:00Z");
    let batch = format!("[{record},{second},{bad_times},42]");
    let record_counts = || {
        let metrics = service::http_get(tss.admin, "/metrics").1;
        ["stored", "duplicate", "refused"].map(|result| {
            let prefix = format!("floorwire_tss_call_records_total{{result=\"{result}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        })
    };
    let before = record_counts();
    let (status, _, body) = api.tpo("POST", "/api/call-records/batch", &[], Some(&batch));
    assert_eq!(status, 200, "{backend}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let results = v["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 201, 400, 400], "{backend}: {body}");
    assert_eq!(results[1]["record_id"], "tpo-1a-000002");
    assert_eq!(results[2]["field"], "ended_at", "{body}");
    assert_eq!(results[3]["field"], "[3]", "{body}");
    let after = record_counts();
    assert_eq!(
        [0, 1, 2].map(|i| after[i] - before[i]),
        [1, 1, 2],
        "{backend}: stored, duplicate, refused counted a record each"
    );
    let (status, v) = api.admin("GET", "/api/call-records?user=trader02", None);
    assert_eq!(status, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "{backend}: {v}");
    let (status, _, body) = api.tpo("POST", "/api/call-records/batch", &[], Some("{}"));
    assert_eq!(status, 400, "not an array: {body}");

    // TPO config: ETag is the revision; unchanged store answers 304.
    let (status, head, body) = api.tpo("GET", "/api/tpo/config", &[], None);
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["dial_plan"].as_array().unwrap().len(), 4);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_owned();
    let inm = format!("if-none-match: {etag}");
    let (status, _, _) = api.tpo("GET", "/api/tpo/config", &["-H", &inm], None);
    assert_eq!(status, 304);
    let (status, v) = api.admin("POST", "/api/turrets/T-0002/sip-credential", None);
    assert_eq!(status, 201, "{v}");
    let (status, _, body) = api.tpo("GET", "/api/tpo/config", &["-H", &inm], None);
    assert_eq!(status, 200, "a change ends the 304s");
    let config: Value = serde_json::from_str(&body).unwrap();
    let device = &config["devices"][0];
    let password = v["credential"]["password"].as_str().unwrap();
    assert_eq!(device["username"], "dev-T-0002");
    assert_eq!(
        device["ha1_md5"].as_str().unwrap(),
        floorwire::sip::auth::ha1(
            floorwire::sip::auth::Algorithm::Md5,
            "dev-T-0002",
            "floorwire",
            password
        )
    );
    assert!(!body.contains(password), "TPOs get HA1, never the password");

    // Audit trail: who changed what.
    let (_, changes) = api.admin("GET", "/api/changes?since=1", None);
    let entities: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["entity"].as_str())
        .collect();
    assert!(
        entities.contains(&"profile")
            && entities.contains(&"line")
            && entities.contains(&"sip_credential"),
        "{entities:?}"
    );
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["actor"] == "admin")
    );

    // Failed logins are throttled per user and source: the right password waits too.
    for _ in 0..5 {
        let (status, _, _) = api.call("GET", "/api/users", Some("admin:nope"), None);
        assert_eq!(status, 401);
    }
    let (status, head, _) = api.call("GET", "/api/users", Some("admin:admin-pass"), None);
    assert_eq!(status, 429, "{backend}");
    assert!(head.contains("retry-after:"), "{head}");
    let (status, _, _) = api.call(
        "GET",
        "/api/users/trader01/profile",
        Some("trader01:t01-pass"),
        None,
    );
    assert_eq!(status, 403, "another user is not throttled");
    assert!(
        service::http_get(tss.admin, "/metrics")
            .1
            .contains("floorwire_tss_logins_total{result=\"throttled\"} 1")
    );

    let status = service::terminate(tss);
    assert!(status.success(), "{backend}: graceful stop");
}

#[test]
fn api_through_curl_on_every_backend() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dbs = rt.block_on(common::all_backends("api"));
    for db in dbs {
        eprintln!("API suite on {}", db.backend);
        exercise(db.backend, &db.url);
        rt.block_on(db.drop_db());
    }
}
