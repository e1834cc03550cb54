//! The recorder stand-in (`turret-sim recorder`): a SIPREC recording server (RFC 7866).
//! Each recording session's two streams are received on ports of their own and
//! stored, when the session ends, as one stereo WAV (left: the caller, label 1;
//! right: the callee, label 2) beside a metadata JSON file (what RFC 7865 metadata
//! said, plus times and packet counts). The replay port serves search and the audio
//! over HTTP (docs/recorder.md).

pub mod offer;
pub mod replay;
pub mod track;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use floorwire::rtp::g711;
use floorwire::sdp::Codec;
use floorwire::service::admin::Health;
use floorwire::sip::dialog::Dialog;
use floorwire::sip::ids::{MessageIds, Tag};
use floorwire::sip::msg::{Header, Method};
use floorwire::sip::reply::{response_to, with_body, with_header};
use floorwire::sip::transaction::{Event, TransactionId, TransactionLayer};
use floorwire::sip::uas::{UasPolicy, check_request};
use floorwire::sip::udp::{TransactionUser, UdpConfig, run_udp};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Error;
use offer::{OfferedStream, SiprecOffer};
use track::Track;

/// A recorded stream without a packet this long ends (its session too, once both
/// have).
pub const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Recording sessions at once; past it new ones get 503.
pub const MAX_SESSIONS: usize = 2000;

/// Where the recorder listens and keeps its recordings.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// SIPREC (SIP over UDP); the streams' ports are taken on its IP.
    pub sip: SocketAddr,
    /// Admin HTTP (`/metrics`, `/healthz`).
    pub admin: SocketAddr,
    /// Replay HTTP (search, metadata, audio).
    pub replay: SocketAddr,
    /// Folder of the recordings (one sub-folder each).
    pub dir: PathBuf,
}

/// The recordings on disk and their metadata, by id.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    index: Mutex<BTreeMap<String, Value>>,
}

impl Store {
    /// Opens `dir`, reading the metadata of the recordings already there.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let mut index = BTreeMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let file = entry.path().join("metadata.json");
            if let Ok(bytes) = std::fs::read(&file)
                && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
                && let Some(id) = v["id"].as_str().map(str::to_owned)
            {
                // Left "recording" by a recorder that died: its audio never came.
                if v["state"] == "recording" {
                    v["state"] = json!("interrupted");
                    let _ =
                        std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap_or_default());
                }
                index.insert(id, v);
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index: Mutex::new(index),
        })
    }

    /// The folder of recording `id`.
    pub fn folder(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Writes (and indexes) a recording's metadata.
    pub fn put(&self, metadata: Value) -> Result<(), Error> {
        let id = metadata["id"].as_str().unwrap_or_default().to_owned();
        let folder = self.folder(&id);
        std::fs::create_dir_all(&folder)?;
        let temporary = folder.join("metadata.json.new");
        std::fs::write(
            &temporary,
            serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
        )?;
        std::fs::rename(&temporary, folder.join("metadata.json"))?;
        if let Ok(mut index) = self.index.lock() {
            index.insert(id, metadata);
        }
        Ok(())
    }

    /// The metadata of recording `id`.
    pub fn get(&self, id: &str) -> Option<Value> {
        self.index.lock().ok()?.get(id).cloned()
    }

    /// Every recording's metadata, oldest first.
    pub fn all(&self) -> Vec<Value> {
        let mut all: Vec<Value> = self
            .index
            .lock()
            .map(|i| i.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| {
            a["started_at"]
                .as_str()
                .cmp(&b["started_at"].as_str())
                .then(a["id"].as_str().cmp(&b["id"].as_str()))
        });
        all
    }
}

/// The recorder's counters (`floorwire_recorder_*`).
#[derive(Debug, Clone)]
pub struct RecorderMetrics {
    sessions: IntCounterVec,
    active: IntGauge,
    packets: IntCounter,
}

impl RecorderMetrics {
    pub fn register(registry: &Registry) -> Result<Self, Error> {
        let sessions = IntCounterVec::new(
            Opts::new(
                "floorwire_recorder_sessions_total",
                "Recording sessions offered, by result (recorded, refused)",
            ),
            &["result"],
        )?;
        let active = IntGauge::new(
            "floorwire_recorder_sessions_active",
            "Recording sessions in progress",
        )?;
        let packets = IntCounter::new(
            "floorwire_recorder_rtp_packets_total",
            "RTP packets received on recorded streams",
        )?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(packets.clone()))?;
        Ok(Self {
            sessions,
            active,
            packets,
        })
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A new recording id: the UTC time and a random suffix (`rec-20261201T091500-1a2b3c4d`).
fn new_id() -> String {
    let time: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .take(15)
        .collect();
    format!("rec-{time}-{:08x}", rand::random::<u32>())
}

/// A recording session in progress.
#[derive(Debug)]
struct Live {
    dialog: Dialog,
    answer: Vec<u8>,
    stop: CancellationToken,
    /// Set when the capture has ended by itself (its streams went silent).
    done: Arc<std::sync::atomic::AtomicBool>,
}

/// The SIPREC side: answers recording sessions and starts their captures.
#[derive(Debug)]
pub struct Recorder {
    ip: IpAddr,
    contact: String,
    policy: UasPolicy,
    store: Arc<Store>,
    metrics: RecorderMetrics,
    shutdown: CancellationToken,
    /// The captures, waited for at shutdown so their files are complete.
    captures: TaskTracker,
    /// Sessions by (Call-ID, our tag).
    sessions: HashMap<(String, String), Live>,
    /// When ended sessions are next swept.
    sweep_at: Instant,
    awaiting_ack: HashMap<TransactionId, (String, String)>,
}

impl Recorder {
    pub fn new(
        sip: SocketAddr,
        store: Arc<Store>,
        metrics: RecorderMetrics,
        shutdown: CancellationToken,
        captures: TaskTracker,
    ) -> Self {
        Self {
            ip: sip.ip(),
            contact: format!("sip:recorder@{sip}"),
            policy: UasPolicy {
                extensions: vec!["siprec".into()],
                content_types: vec![
                    "application/sdp".into(),
                    "multipart/mixed".into(),
                    offer::METADATA_TYPE.into(),
                ],
                ..UasPolicy::default()
            },
            store,
            metrics,
            shutdown,
            captures,
            sessions: HashMap::new(),
            sweep_at: Instant::now(),
            awaiting_ack: HashMap::new(),
        }
    }

    /// Takes a new recording session: binds its streams' ports, writes its metadata
    /// and starts the capture. Returns the SDP answer and the capture's stop token.
    fn begin(
        &self,
        offer: &SiprecOffer,
        call_id: &str,
    ) -> Result<
        (
            Vec<u8>,
            CancellationToken,
            Arc<std::sync::atomic::AtomicBool>,
        ),
        Error,
    > {
        let mut sockets = Vec::new();
        let mut ports = Vec::new();
        for stream in &offer.streams {
            match stream.payload {
                Some((_, codec)) => {
                    let socket = std::net::UdpSocket::bind((self.ip, 0))?;
                    socket.set_nonblocking(true)?;
                    ports.push(socket.local_addr()?.port());
                    sockets.push(Some((tokio::net::UdpSocket::from_std(socket)?, codec)));
                }
                None => {
                    ports.push(0);
                    sockets.push(None);
                }
            }
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(Error::Lab(format!(
                "{MAX_SESSIONS} recording sessions at once"
            )));
        }
        if sockets.iter().all(Option::is_none) {
            return Err(Error::Siprec("no stream offers G.711".into()));
        }
        let id = new_id();
        let m = &offer.metadata;
        let party = |i: usize| {
            m.participants
                .get(i)
                .map(|p| json!(p))
                .unwrap_or(Value::Null)
        };
        let metadata = json!({
            "id": id,
            "state": "recording",
            "siprec_call_id": call_id,
            "session_id": m.session_id,
            "call_id": m.call_id,
            "start_time": m.start_time,
            "caller": party(0),
            "callee": party(1),
            "participants": m.participants,
            "user": m.facts.get("user"),
            "line": m.facts.get("line"),
            "direction": m.facts.get("direction"),
            "tpo": m.facts.get("tpo"),
            "facts": m.facts,
            "started_at": now_rfc3339(),
            "ended_at": Value::Null,
            "streams": offer.streams.iter().map(|s| json!({"label": s.label})).collect::<Vec<_>>(),
            "audio": Value::Null,
        });
        self.store.put(metadata.clone())?;
        let answer = offer::answer_sdp(
            self.ip,
            &offer.streams,
            &ports,
            rand::random::<u32>() as u64,
        );
        let stop = self.shutdown.child_token();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.captures.spawn(capture(
            self.store.clone(),
            metadata,
            offer.streams.clone(),
            sockets,
            stop.clone(),
            self.metrics.clone(),
            done.clone(),
        ));
        self.metrics.active.inc();
        self.metrics.sessions.with_label_values(&["recorded"]).inc();
        tracing::info!(recording = %id, call_id = %m.call_id, "recording session started");
        Ok((answer, stop, done))
    }
}

fn content_type(request: &floorwire::sip::msg::Request) -> String {
    request
        .headers
        .iter()
        .find_map(|h| match h {
            Header::ContentType(c) => Some(c.value().to_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

impl TransactionUser for Recorder {
    /// Sessions whose capture ended by itself (silent streams) are swept every 10 s.
    fn next_timer(&self) -> Option<Instant> {
        (!self.sessions.is_empty()).then_some(self.sweep_at)
    }

    fn on_timer(&mut self, now: Instant, _layer: &mut TransactionLayer) {
        self.sweep_at = now + std::time::Duration::from_secs(10);
        self.sessions
            .retain(|_, live| !live.done.load(std::sync::atomic::Ordering::Relaxed));
    }

    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        let (id, request) = match event {
            Event::Request { id, request, .. } => (id, request),
            Event::Ack { request, .. } => {
                let ids = MessageIds::of(&request);
                if let (Some(call_id), Some(tag)) = (ids.call_id, ids.to_tag) {
                    let key = (call_id.as_str().to_owned(), tag.as_str().to_owned());
                    self.awaiting_ack.retain(|_, k| *k != key);
                }
                return;
            }
            Event::AckTimeout { id } => {
                if let Some(key) = self.awaiting_ack.remove(&id)
                    && let Some(live) = self.sessions.remove(&key)
                {
                    live.stop.cancel();
                    tracing::info!(call_id = %key.0, "no ACK for the 200: recording ended");
                }
                return;
            }
            _ => return,
        };
        let tag = Tag::generate();
        if let Err(refusal) = check_request(&request, &self.policy) {
            let _ = layer.respond(now, id, refusal.response(&request, &tag));
            return;
        }
        let ids = MessageIds::of(&request);
        let call_id = ids
            .call_id
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let contact = Header::Contact(format!("<{}>", self.contact).into());
        let response = match request.method {
            Method::Invite if ids.to_tag.is_none() => {
                let begun = offer::parse_offer(&content_type(&request), &request.body)
                    .and_then(|offer| self.begin(&offer, &call_id));
                match begun {
                    Err(e) => {
                        tracing::info!(%call_id, error = %e, "recording session refused");
                        self.metrics.sessions.with_label_values(&["refused"]).inc();
                        match e {
                            // The offer's fault: say what (quotes and controls removed,
                            // it goes in a quoted string).
                            Error::Siprec(why) | Error::Floorwire(floorwire::Error::Sdp(why)) => {
                                let why: String = why
                                    .chars()
                                    .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
                                    .collect();
                                with_header(
                                    response_to(&request, 488, Some(&tag)),
                                    Header::Warning(format!("399 recorder \"{why}\"").into()),
                                )
                            }
                            // Ours (ports, disk, too many sessions): no details to the peer.
                            _ => with_header(
                                response_to(&request, 503, Some(&tag)),
                                Header::RetryAfter("5".into()),
                            ),
                        }
                    }
                    Ok((answer, stop, done)) => {
                        match Dialog::from_uas(&request, tag.clone(), &self.contact) {
                            Ok(dialog) => {
                                let key = (call_id, tag.as_str().to_owned());
                                self.awaiting_ack.insert(id, key.clone());
                                self.sessions.insert(
                                    key,
                                    Live {
                                        dialog,
                                        answer: answer.clone(),
                                        stop,
                                        done,
                                    },
                                );
                                with_body(
                                    with_header(response_to(&request, 200, Some(&tag)), contact),
                                    "application/sdp",
                                    answer,
                                )
                            }
                            Err(e) => {
                                stop.cancel();
                                tracing::info!(%call_id, error = %e, "recording session refused");
                                response_to(&request, 400, Some(&tag))
                            }
                        }
                    }
                }
            }
            // An OPTIONS in a recording session (the SRC's keepalive) is answered 200
            // only while the session lives here: 481 tells the SRC the copy is gone.
            Method::Bye | Method::Invite | Method::Update | Method::Info | Method::Options
                if request.method != Method::Options || ids.to_tag.is_some() =>
            {
                let key = (
                    call_id,
                    ids.to_tag
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                );
                match self.sessions.get_mut(&key) {
                    None => response_to(&request, 481, Some(&tag)),
                    Some(live) => match live.dialog.receive_request(&request) {
                        Err(status) => response_to(&request, status, None),
                        Ok(()) if request.method == Method::Bye => {
                            if let Some(live) = self.sessions.remove(&key) {
                                live.stop.cancel();
                            }
                            response_to(&request, 200, None)
                        }
                        // A re-INVITE (a metadata update, a hold): same streams, same ports.
                        Ok(()) if request.method == Method::Invite => with_body(
                            with_header(response_to(&request, 200, None), contact),
                            "application/sdp",
                            live.answer.clone(),
                        ),
                        Ok(()) => response_to(&request, 200, None),
                    },
                }
            }
            Method::Options => with_header(
                response_to(&request, 200, Some(&tag)),
                Header::Allow("INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO".into()),
            ),
            _ => response_to(&request, 405, Some(&tag)),
        };
        let _ = layer.respond(now, id, response);
    }
}

/// Receives one stream until `stop`: its audio, placed in time from `started`.
async fn receive(
    socket: tokio::net::UdpSocket,
    started: Instant,
    stop: CancellationToken,
    metrics: RecorderMetrics,
) -> Track {
    let mut track = Track::default();
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return track,
            // A stream silent this long has no SRC behind it any more (a TPO that died
            // sends no BYE): it ends, so that the recording is written and its ports
            // and session freed.
            _ = tokio::time::sleep(STREAM_IDLE) => {
                tracing::info!("recorded stream silent for {} s: ended", STREAM_IDLE.as_secs());
                return track;
            }
            received = socket.recv(&mut buf) => {
                let Ok(n) = received else { continue };
                let Ok(rtp) = rtp_rs::RtpReader::new(&buf[..n]) else { continue };
                // The SRC forwards the call's packets as they are: either law may come,
                // whichever the answer named.
                let samples = match rtp.payload_type() {
                    8 => g711::decode_pcma(rtp.payload()),
                    0 => g711::decode_pcmu(rtp.payload()),
                    // Telephone events, comfort noise: not audio.
                    _ => continue,
                };
                metrics.packets.inc();
                let arrival = started.elapsed().as_micros() as u64 * u64::from(track::RATE) / 1_000_000;
                track.put(arrival, rtp.timestamp(), &samples);
            }
        }
    }
}

/// Captures a session's streams until `stop`, then writes the WAV and completes the
/// metadata.
async fn capture(
    store: Arc<Store>,
    mut metadata: Value,
    streams: Vec<OfferedStream>,
    sockets: Vec<Option<(tokio::net::UdpSocket, Codec)>>,
    stop: CancellationToken,
    metrics: RecorderMetrics,
    done: Arc<std::sync::atomic::AtomicBool>,
) {
    let started = Instant::now();
    let mut receivers = Vec::new();
    for socket in sockets {
        receivers.push(socket.map(|(socket, codec)| {
            (
                codec,
                tokio::spawn(receive(socket, started, stop.clone(), metrics.clone())),
            )
        }));
    }
    let mut tracks = Vec::new();
    let mut described = Vec::new();
    for (stream, receiver) in streams.iter().zip(receivers) {
        let (codec, track) = match receiver {
            Some((codec, handle)) => (Some(codec), handle.await.unwrap_or_default()),
            None => (None, Track::default()),
        };
        described.push(json!({
            "label": stream.label,
            "codec": codec.map(Codec::name),
            "packets": track.packets,
            "dropped_samples": track.dropped,
            "seconds": track.samples().len() as f64 / f64::from(track::RATE),
        }));
        tracks.push(track);
    }
    metrics.active.dec();
    let id = metadata["id"].as_str().unwrap_or_default().to_owned();
    let folder = store.folder(&id);
    let written = tokio::task::spawn_blocking(move || {
        write_wav(&folder.join("audio.wav"), &streams, &tracks)
    })
    .await
    .map_err(|e| Error::Lab(e.to_string()))
    .and_then(|r| r);
    metadata["state"] = json!("complete");
    metadata["ended_at"] = json!(now_rfc3339());
    metadata["duration_ms"] = json!(started.elapsed().as_millis() as u64);
    metadata["streams"] = json!(described);
    match written {
        Ok(()) => metadata["audio"] = json!("audio.wav"),
        Err(e) => {
            tracing::warn!(recording = %id, error = %e, "audio not written");
            metadata["state"] = json!("audio lost");
        }
    }
    if let Err(e) = store.put(metadata) {
        tracing::warn!(recording = %id, error = %e, "metadata not written");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(recording = %id, "recording session ended");
}

/// Writes a 16-bit 8 kHz stereo WAV: left the stream labelled `1` (the caller's),
/// right the one labelled `2` (the callee's); without those labels, the first two
/// streams in the offer's order.
fn write_wav(path: &Path, streams: &[OfferedStream], tracks: &[Track]) -> Result<(), Error> {
    let empty = Track::default();
    let by_label = |label: &str, fallback: usize| {
        streams
            .iter()
            .position(|s| s.label == label)
            .or((streams.len() > fallback).then_some(fallback))
            .and_then(|i| tracks.get(i))
            .unwrap_or(&empty)
    };
    let left = by_label("1", 0).samples();
    let right = by_label("2", 1).samples();
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: track::RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let wav_error = |e: hound::Error| Error::Siprec(format!("{}: {e}", path.display()));
    let mut writer = hound::WavWriter::create(path, spec).map_err(wav_error)?;
    for sample in track::interleave(left, right) {
        writer.write_sample(sample).map_err(wav_error)?;
    }
    writer.finalize().map_err(wav_error)?;
    Ok(())
}

/// Serves the recorder until `shutdown`; `ready` gets (admin, sip, replay) once all
/// three are bound.
pub async fn serve(
    options: RecorderOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr, SocketAddr, SocketAddr),
) -> Result<(), Error> {
    let store = Arc::new(Store::open(&options.dir)?);
    let socket = tokio::net::UdpSocket::bind(options.sip)
        .await
        .map_err(|e| Error::Lab(format!("recorder SIP {}: {e}", options.sip)))?;
    let sip = socket.local_addr()?;
    let registry = Registry::new();
    let metrics = RecorderMetrics::register(&registry)?;
    let sip_metrics = floorwire::sip::metrics::SipMetrics::register(&registry)
        .map_err(|e| Error::Lab(format!("recorder metrics: {e}")))?;
    let health = Health::default();
    let (admin, admin_serving) =
        floorwire::service::admin::serve(options.admin, registry, health.clone(), shutdown.clone())
            .await?;
    let (replay, replay_serving) =
        replay::serve(options.replay, store.clone(), shutdown.clone()).await?;
    health.set_ready(true);
    ready(admin, sip, replay);
    let captures = TaskTracker::new();
    let recorder = Recorder::new(sip, store, metrics, shutdown.clone(), captures.clone());
    let (sip_result, admin_result, _) = tokio::join!(
        run_udp(
            socket,
            UdpConfig {
                metrics: Some(sip_metrics),
                ..UdpConfig::default()
            },
            recorder,
            shutdown.clone()
        ),
        admin_serving,
        replay_serving
    );
    // Recordings in progress end with the recorder: their files are written out.
    captures.close();
    captures.wait().await;
    sip_result?;
    admin_result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use floorwire::sip::msg::Response;
    use floorwire::sip::siprec::{
        Participant, RecordingIds, RecordingMetadata, answer_streams, invite_body, metadata_xml,
        offer_sdp,
    };
    use floorwire::sip::transaction::LayerConfig;
    use floorwire::sip::{Inbound, parse_datagram};

    use super::*;

    const SRC: &str = "127.0.0.1:5070";

    fn exchange(
        layer: &mut TransactionLayer,
        recorder: &mut Recorder,
        text: &[u8],
    ) -> Vec<Response> {
        let now = Instant::now();
        layer.handle_datagram(now, SRC.parse().expect("addr"), text);
        while let Some(e) = layer.poll_event() {
            recorder.on_event(now, e, layer);
        }
        std::iter::from_fn(|| layer.poll_transmit())
            .filter_map(|t| match parse_datagram(&t.bytes) {
                Ok(Inbound::Response(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn request(method: &str, cseq: u32, to_tag: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut text = format!(
            "{method} sip:recorder@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {SRC};branch=z9hG4bK{method}{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:tpo@127.0.0.1>;tag=src1\r\nTo: <sip:recorder@127.0.0.1>{to_tag}\r\n\
Call-ID: siprec-unit\r\nCSeq: {cseq} {method}\r\nContact: <sip:tpo@{SRC}>\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        text.extend_from_slice(body);
        text
    }

    #[tokio::test]
    async fn records_a_session_from_invite_to_bye() {
        let dir =
            std::env::temp_dir().join(format!("floorwire-recorder-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).expect("store"));
        let metrics = RecorderMetrics::register(&Registry::new()).expect("metrics");
        let captures = TaskTracker::new();
        let mut recorder = Recorder::new(
            "127.0.0.1:5060".parse().expect("addr"),
            store.clone(),
            metrics,
            CancellationToken::new(),
            captures.clone(),
        );
        let mut layer = TransactionLayer::new(LayerConfig::default());
        let metadata = RecordingMetadata {
            call_id: "recorded-call".into(),
            caller: Participant {
                aor: "sip:7101@tpo".into(),
                name: Some("trader01".into()),
            },
            callee: Participant {
                aor: "sip:7111@tpo".into(),
                name: None,
            },
            start_time: "2026-12-01T09:00:00.000Z".into(),
            extension: vec![("user".into(), "trader01".into())],
        };
        let sdp = offer_sdp(
            "127.0.0.1:11000".parse().expect("a"),
            "127.0.0.1:11002".parse().expect("a"),
            1,
        );
        let (content_type, body) =
            invite_body(&sdp, &metadata_xml(&metadata, &RecordingIds::generate()));

        // A body of a type the recorder does not take: 415.
        let plain = request("INVITE", 1, "", "Content-Type: text/plain\r\n", b"hello");
        let codes: Vec<u16> = exchange(&mut layer, &mut recorder, &plain)
            .iter()
            .map(|r| r.status_code.code())
            .collect();
        assert_eq!(codes.last(), Some(&415));

        let invite = request(
            "INVITE",
            2,
            "",
            &format!("Require: siprec\r\nContent-Type: {content_type}\r\n"),
            &body,
        );
        let responses = exchange(&mut layer, &mut recorder, &invite);
        let ok = responses.last().expect("a final answer");
        assert_eq!(ok.status_code.code(), 200);
        let answer = floorwire::sdp::parse(&ok.body).expect("sdp");
        let (caller, callee) = answer_streams(&answer).expect("streams");
        let (caller, callee) = (
            caller.expect("caller stream"),
            callee.expect("callee stream"),
        );
        assert_ne!(caller, callee);

        // One packet of A-law audio on each stream.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for (port, fill) in [(caller, 0x55u8), (callee, 0xd5u8)] {
            let mut packet = vec![0x80, 8, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1];
            packet.extend(std::iter::repeat_n(fill, 160));
            sender.send_to(&packet, port).expect("send");
        }
        let to_tag = floorwire::sip::MessageIds::of(ok).to_tag.expect("tag");
        let id = store.all()[0]["id"].as_str().expect("id").to_owned();
        assert_eq!(store.get(&id).expect("metadata")["state"], "recording");
        // Let the packets arrive before the BYE ends the capture.
        let deadline = Instant::now() + Duration::from_secs(5);
        while recorder.metrics.packets.get() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The SRC's keepalive: an OPTIONS in the session gets 200 while it lives.
        let in_session = format!(";tag={}", to_tag.as_str());
        let codes = |layer: &mut TransactionLayer, recorder: &mut Recorder, text: &[u8]| {
            exchange(layer, recorder, text)
                .iter()
                .map(|r| r.status_code.code())
                .collect::<Vec<u16>>()
        };
        let keepalive = request("OPTIONS", 3, &in_session, "", b"");
        assert_eq!(codes(&mut layer, &mut recorder, &keepalive), vec![200]);
        let bye = request("BYE", 4, &in_session, "", b"");
        assert_eq!(codes(&mut layer, &mut recorder, &bye), vec![200]);
        // Once it ended, 481: the recording is not here any more.
        let late = request("OPTIONS", 5, &in_session, "", b"");
        assert_eq!(codes(&mut layer, &mut recorder, &late), vec![481]);
        // Outside any session, OPTIONS is a plain "are you there": 200.
        let ping = request("OPTIONS", 6, "", "", b"");
        assert_eq!(codes(&mut layer, &mut recorder, &ping), vec![200]);
        captures.close();
        captures.wait().await;

        let done = store.get(&id).expect("metadata");
        assert_eq!(done["state"], "complete");
        assert_eq!(done["user"], "trader01");
        assert_eq!(done["callee"]["number"], "7111");
        assert_eq!(done["streams"][0]["packets"], 1);
        assert_eq!(done["streams"][1]["packets"], 1);
        let wav = hound::WavReader::open(store.folder(&id).join("audio.wav")).expect("wav");
        assert_eq!(wav.spec().channels, 2);
        assert!(
            wav.len() >= 320,
            "both channels hold the packet's 160 samples"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
