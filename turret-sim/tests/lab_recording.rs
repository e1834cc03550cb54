//! Recording in the lab, end to end with real phones: two baresip turrets register
//! with the credentials lab.json lists (trader01 on tpo-1a, trader11 on tpo-2a),
//! trader01 calls trader11's extension (through the peer TPO) and each sends a tone of
//! its own. tpo-1a records the call (SIPREC) to both recorder stand-ins; each stores
//! it as a stereo WAV with the caller's tone on the left and the callee's on the
//! right, findable through its replay port by user and number. A recorder stopped
//! through the control port costs neither the call nor the other recording.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

#[path = "../../tests-common/baresip.rs"]
mod baresip;

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use baresip::{Phone, baresip_available, wav_samples};
use floorwire::rtp::tone::detect_tone;
use serde_json::Value;

const CALLER_TONE: f64 = 1000.0;
const CALLEE_TONE: f64 = 1400.0;

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = service::http_get(addr, path);
    assert_eq!(status, 200, "GET {path} at {addr}: {body}");
    let body = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn get_bytes(addr: SocketAddr, path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{addr}{path}")])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "GET {path} at {addr}: {:?}",
        out.status
    );
    out.stdout
}

fn post(addr: SocketAddr, path: &str) {
    let out = Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("http://{addr}{path}")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "POST {path} at {addr}");
}

/// The stereo WAV's channels.
fn channels(wav: &[u8]) -> (Vec<i16>, Vec<i16>) {
    let samples = wav_samples(wav);
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

/// `audio` holds at least 2 s with `tone` in it and without `not`.
fn assert_tone(what: &str, audio: &[i16], tone: f64, not: f64) {
    // Leading silence (before the stream's first packet) is not part of the test.
    let start = audio.iter().position(|s| *s != 0).unwrap_or(audio.len());
    let heard = &audio[start..];
    assert!(
        heard.len() >= 16_000,
        "{what}: only {} samples",
        heard.len()
    );
    assert!(detect_tone(heard, tone), "{what}: {tone} Hz expected");
    assert!(!detect_tone(heard, not), "{what}: {not} Hz not expected");
}

/// The recordings a recorder holds for trader01's calls, once `count` have ended.
fn complete_recordings(replay: SocketAddr, count: usize) -> Vec<Value> {
    let mut found = Vec::new();
    service::wait_until(Duration::from_secs(10), "recordings complete", || {
        found = get_json(replay, "/recordings?user=trader01&number=7111")
            .as_array()
            .cloned()
            .unwrap_or_default();
        found.len() == count && found.iter().all(|r| r["state"] == "complete")
    });
    found
}

/// trader01 calls trader11 (7111) and hangs up once each heard 3 s of the other.
fn call(caller: &mut Phone, callee: &Phone, registrar: &str, tpo_admin: SocketAddr, nth: f64) {
    let earlier = nth as usize - 1;
    caller.command(&format!("/dial sip:7111@{registrar}"));
    service::wait_until(Duration::from_secs(15), "3 s of audio each way", || {
        caller.heard_in_call(earlier) >= 24_000 && callee.heard_in_call(earlier) >= 24_000
    });
    caller.command("/hangup");
    service::wait_until(Duration::from_secs(10), "the call over", || {
        service::metric(tpo_admin, "floorwire_tpo_calls_ended_total") == Some(nth)
    });
}

#[test]
fn a_lab_call_is_recorded_on_both_recorders_and_replayed() {
    if !baresip_available() {
        return;
    }
    let lab = common::Lab::start("recording");
    let phones = lab.dir.join("phones");
    let (trader01, trader11) = (lab.user("trader01"), lab.user("trader11"));
    let phone = |user: &Value, ip: &str, tone: f64, ports: (u16, u16)| {
        let sip = &user["sip"];
        Phone::start(
            &phones,
            sip["username"].as_str().unwrap(),
            sip["password"].as_str().unwrap(),
            sip["registrar"].as_str().unwrap().parse().unwrap(),
            ip,
            tone as u32,
            ports,
        )
    };
    let mut caller = phone(&trader01, "127.0.10.1", CALLER_TONE, (41000, 41099));
    let callee = phone(&trader11, "127.0.10.11", CALLEE_TONE, (41100, 41199));
    let (tpo_1a, tpo_2a) = (
        lab.endpoint("tpo-1a", "admin"),
        lab.endpoint("tpo-2a", "admin"),
    );
    service::wait_until(Duration::from_secs(15), "both phones registered", || {
        service::metric(tpo_1a, "floorwire_tpo_registered_devices") == Some(1.0)
            && service::metric(tpo_2a, "floorwire_tpo_registered_devices") == Some(1.0)
    });
    let registrar = trader01["sip"]["registrar"].as_str().unwrap().to_owned();
    call(&mut caller, &callee, &registrar, tpo_1a, 1.0);

    let replays = [
        lab.endpoint("recorder-1", "replay"),
        lab.endpoint("recorder-2", "replay"),
    ];
    for replay in replays {
        let recordings = complete_recordings(replay, 1);
        let r = &recordings[0];
        assert_eq!(r["direction"], "internal", "{r}");
        assert_eq!(r["callee"]["number"], "7111", "{r}");
        assert_eq!(r["tpo"], "tpo-1a", "{r}");
        let id = r["id"].as_str().unwrap();
        assert_eq!(get_json(replay, &format!("/recordings/{id}"))["id"], id);
        let (left, right) = channels(&get_bytes(replay, &format!("/recordings/{id}/audio.wav")));
        assert_tone(
            &format!("{replay} left (caller)"),
            &left,
            CALLER_TONE,
            CALLEE_TONE,
        );
        assert_tone(
            &format!("{replay} right (callee)"),
            &right,
            CALLEE_TONE,
            CALLER_TONE,
        );
    }
    assert_eq!(
        service::metric(tpo_1a, "floorwire_tpo_recorded_calls_total{copies=\"2\"}"),
        Some(1.0)
    );
    // Bad searches are refused, naming the filter.
    let (status, body) = service::http_get(replays[0], "/recordings?from=yesterday");
    assert_eq!(status, 400);
    assert!(body.contains("from"), "{body}");
    let (status, _) = service::http_get(replays[0], "/recordings?colour=red");
    assert_eq!(status, 400);

    // recorder-2 goes down: the next call is answered and recorded by recorder-1.
    let control: SocketAddr = lab.json["control"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    post(control, "/services/recorder-2/stop");
    call(&mut caller, &callee, &registrar, tpo_1a, 2.0);
    let recordings = complete_recordings(replays[0], 2);
    let id = recordings[1]["id"].as_str().unwrap();
    let (left, right) = channels(&get_bytes(
        replays[0],
        &format!("/recordings/{id}/audio.wav"),
    ));
    assert_tone("recorder-1 alone, left", &left, CALLER_TONE, CALLEE_TONE);
    assert_tone("recorder-1 alone, right", &right, CALLEE_TONE, CALLER_TONE);
    assert_eq!(
        service::metric(tpo_1a, "floorwire_tpo_recorded_calls_total{copies=\"1\"}"),
        Some(1.0)
    );
    caller.quit();
    callee.quit();
    lab.stop();
}
