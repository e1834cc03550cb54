//! Peers for the SBC's tests: a blocking UAC built on floorwire's transaction layer
//! (the TPO side), the carrier stand-in (floorwire's answerer plus an RTP echo), RTP
//! streams that measure gaps, and SBC configs.

#![allow(dead_code)] // each test binary uses a subset

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use floorwire::sdp::{self, Codec, Session};
use floorwire::sip::answerer::{Answerer, AnswererStats};
use floorwire::sip::dialog::Dialog;
use floorwire::sip::ingress::{Inbound, parse_datagram};
use floorwire::sip::msg::{Method, Request, Response};
use floorwire::sip::reply::response_to;
use floorwire::sip::transaction::{Event, LayerConfig, TransactionId, TransactionLayer};
use floorwire::sip::udp::{UdpConfig, run_udp};
use floorwire::sip::{Branch, CallId, MessageIds, Tag};
use tokio_util::sync::CancellationToken;

/// A UAC on a real UDP socket, driven synchronously.
pub struct Uac {
    socket: UdpSocket,
    layer: TransactionLayer,
    pub local: SocketAddr,
    events: VecDeque<Event>,
    /// Requests the far side sent us (we answered 200).
    pub received: Vec<Request>,
}

/// An established call as the UAC sees it.
pub struct UacCall {
    pub dialog: Dialog,
    pub answer: Session,
    pub target: SocketAddr,
    pub invite_seq: u32,
}

fn with_sdp(head: String, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn request(bytes: &[u8]) -> Request {
    match parse_datagram(bytes) {
        Ok(Inbound::Request(r)) => r,
        other => panic!("test request does not parse: {other:?}"),
    }
}

impl Uac {
    pub fn bind(address: &str) -> Self {
        let socket = UdpSocket::bind(address).expect("bind UAC");
        let local = socket.local_addr().expect("local");
        Self {
            socket,
            layer: TransactionLayer::new(LayerConfig::default()),
            local,
            events: VecDeque::new(),
            received: Vec::new(),
        }
    }

    /// Receives and handles what arrives until `deadline` (or one datagram's worth).
    fn pump_once(&mut self, deadline: Instant) {
        self.flush();
        let now = Instant::now();
        let wait = self
            .layer
            .poll_timeout()
            .map_or(deadline, |t| t.min(deadline))
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = vec![0u8; 65_536];
        if let Ok((len, source)) = self.socket.recv_from(&mut buf) {
            self.layer
                .handle_datagram(Instant::now(), source, &buf[..len]);
        }
        self.layer.handle_timeout(Instant::now());
        while let Some(event) = self.layer.poll_event() {
            match event {
                Event::Request { id, request, .. } => {
                    let _ =
                        self.layer
                            .respond(Instant::now(), id, response_to(&request, 200, None));
                    self.received.push(request);
                }
                other => self.events.push_back(other),
            }
        }
        while let Some(t) = self.layer.poll_transmit() {
            let _ = self.socket.send_to(&t.bytes, t.destination);
        }
    }

    /// Waits for the final response of client transaction `tx`.
    fn final_response(&mut self, tx: TransactionId, within: Duration) -> Option<Response> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.pump_once(deadline);
            while let Some(event) = self.events.pop_front() {
                match event {
                    Event::Response { id, response, .. }
                        if id == tx && response.status_code.code() >= 200 =>
                    {
                        return Some(response);
                    }
                    Event::Timeout { id } if id == tx => return None,
                    _ => {}
                }
            }
        }
        None
    }

    /// Calls `called` from `calling` through `target` offering `media` (PCMA, PCMU,
    /// telephone-event); the final status on failure.
    pub fn call(
        &mut self,
        target: SocketAddr,
        called: &str,
        calling: &str,
        media: SocketAddr,
    ) -> Result<UacCall, u16> {
        let codecs = [Codec::Pcma, Codec::Pcmu, Codec::TelephoneEvent];
        self.call_offering(target, called, calling, media, &codecs)
    }

    /// [`Uac::call`] offering `codecs`.
    pub fn call_offering(
        &mut self,
        target: SocketAddr,
        called: &str,
        calling: &str,
        media: SocketAddr,
        codecs: &[Codec],
    ) -> Result<UacCall, u16> {
        let offer = sdp::to_bytes(&sdp::offer(codecs, media, 1));
        let local = self.local;
        let head = format!(
            "INVITE sip:{called}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{calling}@{}>;tag={}\r\nTo: <sip:{called}@{}>\r\n\
Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:tpo@{local}>\r\n",
            Branch::generate(),
            local.ip(),
            Tag::generate(),
            target.ip(),
            CallId::generate(&local.ip().to_string()),
        );
        let invite = request(&with_sdp(head, &offer));
        let tx = self
            .layer
            .send_request(Instant::now(), target, invite.clone())
            .expect("send INVITE");
        let response = self
            .final_response(tx, Duration::from_secs(10))
            .ok_or(408u16)?;
        let status = response.status_code.code();
        if !(200..300).contains(&status) {
            return Err(status);
        }
        let mut dialog = Dialog::from_uac(&invite, &response).expect("dialog");
        let ack = dialog.ack(1, &local.to_string()).expect("ack");
        self.layer
            .send_stateless(target, ack.to_bytes())
            .expect("send ACK");
        self.flush();
        let answer = sdp::parse(&response.body).expect("SDP answer");
        Ok(UacCall {
            dialog,
            answer,
            target,
            invite_seq: 1,
        })
    }

    fn flush(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            let _ = self.socket.send_to(&t.bytes, t.destination);
        }
    }

    /// Sends an in-dialog request (with an SDP body for INVITE); returns the final
    /// status (408 when none came), ACKing a 2xx to INVITE.
    pub fn in_dialog(
        &mut self,
        call: &mut UacCall,
        method: Method,
        sdp_body: Option<Vec<u8>>,
    ) -> u16 {
        let local = self.local.to_string();
        let mut req = call
            .dialog
            .request(method, &local, None)
            .expect("in-dialog request");
        let seq = call.dialog.local_seq;
        if let Some(body) = sdp_body {
            let text = String::from_utf8(req.to_bytes()).expect("utf8");
            let head = text
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.to_ascii_lowercase().starts_with("content-length"))
                .map(|l| format!("{l}\r\n"))
                .collect::<String>();
            req = request(&with_sdp(head, &body));
        }
        let tx = self
            .layer
            .send_request(Instant::now(), call.target, req)
            .expect("send");
        let Some(response) = self.final_response(tx, Duration::from_secs(10)) else {
            return 408;
        };
        let status = response.status_code.code();
        if method == Method::Invite && (200..300).contains(&status) {
            call.invite_seq = seq;
            let ack = call.dialog.ack(seq, &local).expect("ack");
            self.layer
                .send_stateless(call.target, ack.to_bytes())
                .expect("ACK");
            self.flush();
        }
        status
    }

    /// Answers whatever arrives for `within` (BYEs from the far side…).
    pub fn serve_for(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.pump_once(deadline);
        }
    }
}

/// The carrier stand-in: floorwire's answerer on `sip`, announcing `media`, where an
/// RTP echo sends every packet back to where it came from.
pub struct Carrier {
    pub stats: tokio::sync::watch::Receiver<AnswererStats>,
    pub echoed: Arc<std::sync::atomic::AtomicU64>,
    /// RTP payload types the echo has seen.
    pub payload_types: Arc<std::sync::Mutex<std::collections::BTreeSet<u8>>>,
    stop: CancellationToken,
    echo_stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Carrier {
    pub fn start(sip: &str, media: &str) -> Self {
        let sip: SocketAddr = sip.parse().expect("sip addr");
        let media: SocketAddr = media.parse().expect("media addr");
        let (stats_tx, stats) = tokio::sync::watch::channel(AnswererStats::default());
        let stop = CancellationToken::new();
        let socket = std::net::UdpSocket::bind(sip).expect("bind carrier SIP");
        socket.set_nonblocking(true).expect("nonblocking");
        let sip_thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let socket = tokio::net::UdpSocket::from_std(socket).expect("socket");
                    let answerer =
                        Answerer::new(format!("sip:carrier@{sip}"), media).with_stats(stats_tx);
                    let _ = run_udp(socket, UdpConfig::default(), answerer, stop).await;
                });
            }
        });
        let echo = UdpSocket::bind(media).expect("bind carrier media");
        echo.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let echo_stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let payload_types = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let echo_thread = std::thread::spawn({
            let echo_stop = echo_stop.clone();
            let echoed = echoed.clone();
            let payload_types = payload_types.clone();
            move || {
                let mut buf = [0u8; 2048];
                while !echo_stop.load(Ordering::Relaxed) {
                    if let Ok((len, source)) = echo.recv_from(&mut buf) {
                        if len > 1
                            && let Ok(mut seen) = payload_types.lock()
                        {
                            seen.insert(buf[1] & 0x7f);
                        }
                        let _ = echo.send_to(&buf[..len], source);
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            stats,
            echoed,
            payload_types,
            stop,
            echo_stop,
            threads: vec![sip_thread, echo_thread],
        }
    }

    pub fn stats(&self) -> AnswererStats {
        *self.stats.borrow()
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        self.stop.cancel();
        self.echo_stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// RTP streams, one per call, sent every 20 ms; the echo's arrival times kept.
pub struct Streams {
    sockets: Vec<(UdpSocket, SocketAddr)>,
    /// Per stream: arrival times of echoed packets.
    pub arrivals: Vec<Vec<Instant>>,
    seq: u16,
}

impl Streams {
    /// Binds one socket per call on `ip`; returns them with their addresses.
    pub fn bind(ip: &str, n: usize) -> (Self, Vec<SocketAddr>) {
        let sockets: Vec<UdpSocket> = (0..n)
            .map(|_| {
                let s = UdpSocket::bind(format!("{ip}:0")).expect("bind RTP");
                s.set_nonblocking(true).expect("nonblocking");
                s
            })
            .collect();
        let addrs = sockets
            .iter()
            .map(|s| s.local_addr().expect("addr"))
            .collect();
        let placeholder: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        (
            Self {
                arrivals: vec![Vec::new(); n],
                sockets: sockets.into_iter().map(|s| (s, placeholder)).collect(),
                seq: 0,
            },
            addrs,
        )
    }

    /// Where stream `i` sends (the SBC's address from its SDP answer).
    pub fn set_remote(&mut self, i: usize, remote: SocketAddr) {
        self.sockets[i].1 = remote;
    }

    /// Sends one 20 ms PCMA packet per stream and collects what came back, for
    /// `duration` (paced by an interval clock).
    pub fn run_for(&mut self, duration: Duration) {
        let start = Instant::now();
        let mut next = start;
        let mut buf = [0u8; 2048];
        while start.elapsed() < duration {
            self.seq = self.seq.wrapping_add(1);
            let ts = (self.seq as u32).wrapping_mul(160);
            for (i, (socket, remote)) in self.sockets.iter().enumerate() {
                let mut packet = vec![0x80, 8];
                packet.extend_from_slice(&self.seq.to_be_bytes());
                packet.extend_from_slice(&ts.to_be_bytes());
                packet.extend_from_slice(&(0x1000 + i as u32).to_be_bytes());
                packet.extend_from_slice(&[0xD5; 160]);
                let _ = socket.send_to(&packet, *remote);
            }
            next += Duration::from_millis(20);
            // Collect until the next tick.
            loop {
                let mut got = false;
                for (i, (socket, _)) in self.sockets.iter().enumerate() {
                    while socket.recv_from(&mut buf).is_ok() {
                        self.arrivals[i].push(Instant::now());
                        got = true;
                    }
                }
                if Instant::now() >= next {
                    break;
                }
                if !got {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// The longest silence between echoed packets of stream `i` within `[from, to]`.
    pub fn longest_gap(&self, i: usize, from: Instant, to: Instant) -> Duration {
        let times: Vec<Instant> = self.arrivals[i]
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        let mut gap = times.first().map_or(to - from, |f| *f - from);
        for w in times.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        gap.max(times.last().map_or(Duration::ZERO, |l| to - *l))
    }
}

/// The `[ha]` section of a standalone SBC (the replication addresses go unused).
pub const STANDALONE: &str = "mode = \"standalone\"\nnode = \"sbc\"\nlisten = \"127.0.0.1:0\"\npeer = \"127.0.0.1:9\"\nheartbeat_ms = 100\ndead_after_ms = 500";

/// An SBC config: service on `service`, carrier at `carrier`, the TPO at `tpo`,
/// media ports `ports`, and the `[ha]` section given.
pub fn sbc_config(
    admin: &str,
    service: &str,
    carrier: &str,
    tpo: &str,
    ports: (u16, u16),
    rules: Option<&str>,
    ha: &str,
) -> String {
    let rules = rules
        .map(|f| format!("file = \"{f}\"\n"))
        .unwrap_or_default();
    format!(
        "[admin]\nlisten = \"{admin}\"\n\
[sip]\nlisten = \"{service}\"\nmax_calls = 1000\n\
[media]\nfirst_port = {}\nlast_port = {}\n\
[rules]\n{rules}\
[carrier]\naddress = \"{carrier}\"\ntrunk = \"carrier\"\n\
[tpo]\naddresses = [\"{tpo}\"]\ntrunk = \"tpo\"\n\
[[trunk]]\nname = \"carrier\"\nmax_concurrent_calls = 500\nmax_calls_per_second = 1000\n\
codecs = [\"PCMA\", \"PCMU\", \"telephone-event\"]\nblocked_classes = [\"premium\"]\n\
[ha]\n{ha}\n",
        ports.0, ports.1
    )
}

/// Writes `text` to a scratch file named `name`; returns its path.
pub fn write_scratch(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("floorwire-sbc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write scratch file");
    path.display().to_string()
}

/// The call's Call-ID on the UAC side.
pub fn call_id(call: &UacCall) -> String {
    call.dialog.id.call_id.as_str().to_owned()
}

/// The IDs of a request.
pub fn ids(request: &Request) -> MessageIds {
    MessageIds::of(request)
}

/// Whether `method` is among what the UAC received.
pub fn received(uac: &Uac, method: Method) -> usize {
    uac.received.iter().filter(|r| r.method == method).count()
}
