//! baresip, a real SIP phone, through the real `tpo` binary: two baresip turrets
//! register with digest, one calls the other's line, the callee answers by itself,
//! and each sends a sine tone of its own as G.711 RTP through the TPO's relay. Each
//! phone records what it heard (baresip's sndfile module); the test finds the other
//! party's tone in each recording, and the TPO's RTP counters show both directions.
//!
//! The call is recorded (SIPREC) to the two recorders of the caller's site: SIPp
//! recorders that check the metadata and ask for each stream on a port the test
//! listens on; the test finds the caller's tone in stream 1 and the callee's in
//! stream 2 at both recorders. A second call with one recorder down is still recorded
//! by the other. In a third call one recorder dies mid-call (its SIPp killed): the
//! in-dialog OPTIONS the TPO sends every second (SIPp answers them, `-aa`) go
//! unanswered, the recording is counted lost, and the call keeps one copy.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

#[path = "../../floorwire/tests/common/mod.rs"]
mod sipp;

#[path = "../../tests-common/baresip.rs"]
mod baresip;

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use floorwire::rtp::g711;
use floorwire::rtp::tone::detect_tone;

use baresip::{Phone, baresip_available};

/// Listens on `ip` for one recorder stream: the audio of every G.711 RTP packet that
/// comes, until stopped.
struct StreamSink {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<i16>>,
}

impl StreamSink {
    fn start(ip: &str) -> Self {
        let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let Ok(rtp) = rtp_rs::RtpReader::new(&buf[..n]) else {
                    continue;
                };
                match rtp.payload_type() {
                    0 => samples.extend(g711::decode_pcmu(rtp.payload())),
                    8 => samples.extend(g711::decode_pcma(rtp.payload())),
                    _ => {}
                }
            }
            samples
        });
        StreamSink { port, stop, thread }
    }

    fn audio(self) -> Vec<i16> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A SIPp recorder on `ip` for one recording, asking for its two streams on sinks of
/// its own.
struct Recorder {
    address: SocketAddr,
    sipp: Child,
    caller_stream: StreamSink,
    callee_stream: StreamSink,
}

impl Recorder {
    fn start(dir: &Path, ip: &str) -> Self {
        let (caller_stream, callee_stream) = (StreamSink::start(ip), StreamSink::start(ip));
        let port = common::free_port(ip);
        let dir = dir.join(format!("recorder-{ip}-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let fields = dir.join("ports.csv");
        std::fs::write(
            &fields,
            format!(
                "SEQUENTIAL\n{};{};\n",
                caller_stream.port, callee_stream.port
            ),
        )
        .unwrap();
        let scenario = format!("{}/tests/sipp/srs-record.xml", env!("CARGO_MANIFEST_DIR"));
        let sipp = Command::new("sipp")
            .args([
                "-sf",
                &scenario,
                "-inf",
                &fields.display().to_string(),
                "-i",
                ip,
                "-p",
                &port.to_string(),
                "-m",
                "1",
                // The TPO's keepalive OPTIONS in the recording session get a 200.
                "-aa",
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
            ])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let address = SocketAddr::new(ip.parse().unwrap(), port);
        service::wait_until(Duration::from_secs(10), "SIPp recorder listening", || {
            std::net::UdpSocket::bind(address).is_err()
        });
        Recorder {
            address,
            sipp,
            caller_stream,
            callee_stream,
        }
    }

    /// The recorder dies: its SIPp is killed (we started it), its sinks stop.
    fn kill(mut self) {
        let _ = self.sipp.kill();
        let _ = self.sipp.wait();
        let _ = (self.caller_stream.audio(), self.callee_stream.audio());
    }

    /// Waits for the recording session to end; what each stream carried.
    fn finish(self) -> (Vec<i16>, Vec<i16>) {
        let out = self.sipp.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "recorder {}: {}",
            self.address,
            sipp::tail(&out)
        );
        (self.caller_stream.audio(), self.callee_stream.audio())
    }
}

/// The fixture's floor (revision `revision`), its two traders at a site whose
/// recorders are `recorders`.
fn floor_recorded_at(revision: i64, recorders: &[SocketAddr]) -> serde_json::Value {
    let mut config = common::config(revision, "pass-one", "pass-two");
    config["users"] = serde_json::json!([
        {"name": "trader01", "site": "PAR"},
        {"name": "trader02", "site": "PAR"}
    ]);
    let recorders: Vec<String> = recorders.iter().map(ToString::to_string).collect();
    config["sites"] = serde_json::json!([{"name": "PAR", "recorders": recorders}]);
    config
}

/// A call from `caller` to `callee`'s line 7101 (the `nth` call), hung up once each
/// phone has heard 3 s of the other; returns once the TPO has seen it end.
fn call_and_hang_up(
    caller: &mut Phone,
    callee: &Phone,
    sip: SocketAddr,
    admin: SocketAddr,
    nth: f64,
) {
    let metric = |name: &str| service::metric(admin, name);
    let earlier = nth as usize - 1;
    caller.command(&format!("/dial sip:7101@{sip}"));
    service::wait_until(Duration::from_secs(10), "the call answered", || {
        metric("floorwire_tpo_calls_answered_total") == Some(nth)
    });
    // 3 s of 8 kHz audio each way.
    service::wait_until(Duration::from_secs(15), "3 s of audio each way", || {
        caller.heard_in_call(earlier) >= 24_000 && callee.heard_in_call(earlier) >= 24_000
    });
    caller.command("/hangup");
    service::wait_until(Duration::from_secs(10), "the call over", || {
        metric("floorwire_tpo_calls_ended_total") == Some(nth)
    });
}

/// `heard` is at least a second of `tone`, without `not`.
fn assert_tones(what: &str, heard: &[i16], tone: f64, not: f64) {
    assert!(heard.len() > 8000, "{what}: only {} samples", heard.len());
    assert!(detect_tone(heard, tone), "{what}: {tone} Hz expected");
    assert!(!detect_tone(heard, not), "{what}: {not} Hz not expected");
}

#[test]
fn baresip_phones_call_through_the_tpo_hear_each_other_and_are_recorded_twice() {
    if !baresip_available() || !sipp::sipp_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("floorwire-baresip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The traders' site records to two recorders.
    let recorders = [
        Recorder::start(&dir, "127.0.15.40"),
        Recorder::start(&dir, "127.0.15.41"),
    ];
    let second_recorder = recorders[1].address;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tss, fixture) = common::serve(
        &runtime,
        floor_recorded_at(1, &[recorders[0].address, second_recorder]),
    );
    let sip: SocketAddr = format!("127.0.15.10:{}", common::free_port("127.0.15.10"))
        .parse()
        .unwrap();
    let tpo = common::start_tpo(
        tss,
        sip,
        "[]",
        &dir.join("spool"),
        (45000, 45099),
        &[("TPO__RECORDING__KEEPALIVE_SECS", "1")],
    );
    let metric = |name: &str| service::metric(tpo.admin, name);

    let mut caller = Phone::start(
        &dir,
        "dev-T-0001",
        "pass-one",
        sip,
        "127.0.15.1",
        1000,
        (45200, 45299),
    );
    let callee = Phone::start(
        &dir,
        "dev-T-0002",
        "pass-two",
        sip,
        "127.0.15.2",
        1400,
        (45300, 45399),
    );
    service::wait_until(Duration::from_secs(15), "both phones registered", || {
        metric("floorwire_tpo_registered_devices") == Some(2.0)
    });
    // trader02's line 7101; the callee answers by itself (answermode=auto).
    call_and_hang_up(&mut caller, &callee, sip, tpo.admin, 1.0);

    // Each phone heard the other's tone, not its own.
    assert_tones("what the caller heard", &caller.heard(), 1400.0, 1000.0);
    assert_tones("what the callee heard", &callee.heard(), 1000.0, 1400.0);
    // Through the TPO's relay, both ways: 50 packets a second for about 3 s.
    for direction in ["a_to_b", "b_to_a"] {
        let name = format!("floorwire_tpo_rtp_packets_total{{kind=\"{direction}\"}}");
        let packets = metric(&name).unwrap_or(0.0);
        assert!(
            packets >= 100.0,
            "{direction}: {packets} RTP packets relayed"
        );
    }
    // Both recorders got both parties, each on its own stream.
    for recorder in recorders {
        let address = recorder.address;
        let (caller_stream, callee_stream) = recorder.finish();
        assert_tones(
            &format!("{address} stream 1"),
            &caller_stream,
            1000.0,
            1400.0,
        );
        assert_tones(
            &format!("{address} stream 2"),
            &callee_stream,
            1400.0,
            1000.0,
        );
    }
    assert_eq!(
        metric("floorwire_tpo_recorded_calls_total{copies=\"2\"}"),
        Some(1.0)
    );

    // The second recorder is down now: the call goes on, and the first records it.
    let first = Recorder::start(&dir, "127.0.15.40");
    *fixture.config.lock().unwrap() = floor_recorded_at(2, &[first.address, second_recorder]);
    service::wait_until(Duration::from_secs(10), "revision 2", || {
        metric("floorwire_tpo_config_revision") == Some(2.0)
    });
    call_and_hang_up(&mut caller, &callee, sip, tpo.admin, 2.0);
    let (caller_stream, callee_stream) = first.finish();
    assert_tones(
        "the recorder left, stream 1",
        &caller_stream,
        1000.0,
        1400.0,
    );
    assert_tones(
        "the recorder left, stream 2",
        &callee_stream,
        1400.0,
        1000.0,
    );
    assert_eq!(
        metric("floorwire_tpo_recorded_calls_total{copies=\"1\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric("floorwire_tpo_calls_recordings_lost_total"),
        Some(0.0),
        "recorders that answered the keepalives kept their copies"
    );

    // Two recorders take the third call; one dies during it.
    let (kept, dying) = (
        Recorder::start(&dir, "127.0.15.42"),
        Recorder::start(&dir, "127.0.15.43"),
    );
    *fixture.config.lock().unwrap() = floor_recorded_at(3, &[kept.address, dying.address]);
    service::wait_until(Duration::from_secs(10), "revision 3", || {
        metric("floorwire_tpo_config_revision") == Some(3.0)
    });
    caller.command(&format!("/dial sip:7101@{sip}"));
    service::wait_until(Duration::from_secs(10), "the third call answered", || {
        metric("floorwire_tpo_calls_answered_total") == Some(3.0)
    });
    service::wait_until(
        Duration::from_secs(15),
        "a second of audio each way",
        || caller.heard_in_call(2) >= 8_000 && callee.heard_in_call(2) >= 8_000,
    );
    dying.kill();
    service::wait_until(
        Duration::from_secs(10),
        "the dead recorder's copy lost",
        || metric("floorwire_tpo_calls_recordings_lost_total") == Some(1.0),
    );
    assert_eq!(
        metric("floorwire_tpo_calls_active"),
        Some(1.0),
        "the call goes on"
    );
    service::wait_until(Duration::from_secs(15), "3 s of audio each way", || {
        caller.heard_in_call(2) >= 24_000 && callee.heard_in_call(2) >= 24_000
    });
    caller.command("/hangup");
    service::wait_until(Duration::from_secs(10), "the third call over", || {
        metric("floorwire_tpo_calls_ended_total") == Some(3.0)
    });
    let (caller_stream, callee_stream) = kept.finish();
    assert_tones(
        "the recorder kept, stream 1",
        &caller_stream,
        1000.0,
        1400.0,
    );
    assert_tones(
        "the recorder kept, stream 2",
        &callee_stream,
        1400.0,
        1000.0,
    );
    assert_eq!(
        metric("floorwire_tpo_recorded_calls_total{copies=\"1\"}"),
        Some(2.0)
    );
    // Each call's record names the recordings kept.
    let records = common::spooled(&dir.join("spool"));
    let copies: Vec<usize> = records
        .iter()
        .map(|r| r["recordings"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(copies, [2, 1, 1], "{records:#?}");
    caller.quit();
    callee.quit();
    assert!(service::terminate(tpo).success());
    let _ = std::fs::remove_dir_all(dir);
}
