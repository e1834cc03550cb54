//! A simulated turret's media for one call: G.711 A-law RTP with a tone of the
//! turret's own, 20 ms a packet, to wherever the far end's SDP says; what comes back
//! is decoded and the last seconds kept, for "expect a tone".

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floorwire::rtp::g711;
use floorwire::rtp::tone::ToneGenerator;
use tokio_util::sync::CancellationToken;

/// Samples of received audio kept (the last 5 s).
const KEPT: usize = 5 * 8000;

/// What the call's media knows and has heard.
#[derive(Debug, Default)]
struct Shared {
    remote: Option<SocketAddr>,
    sending: bool,
    heard: VecDeque<i16>,
    packets_in: u64,
    packets_out: u64,
    /// When the last packet came, and the longest silence between two packets since
    /// the last [`MediaLeg::forget`].
    last_arrival: Option<Instant>,
    longest_gap: Duration,
    /// Packets since the last [`MediaLeg::forget`].
    since_forget: u64,
    /// The tone sent (Hz); 0: silence.
    tone_hz: f64,
}

/// One call's RTP: bound at creation, sending once a remote is set.
#[derive(Debug, Clone)]
pub struct MediaLeg {
    pub local: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
}

impl MediaLeg {
    /// Binds an RTP port on `ip` and starts the sender (a `tone_hz` sine, silent until
    /// a remote is set) and the receiver.
    pub fn start(ip: std::net::IpAddr, tone_hz: f64) -> std::io::Result<Self> {
        let std_socket = std::net::UdpSocket::bind((ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let local = std_socket.local_addr()?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(std_socket)?);
        let shared = Arc::new(Mutex::new(Shared {
            tone_hz,
            ..Shared::default()
        }));
        let stop = CancellationToken::new();
        tokio::spawn(send(socket.clone(), shared.clone(), stop.clone()));
        tokio::spawn(receive(socket, shared.clone(), stop.clone()));
        Ok(Self {
            local,
            shared,
            stop,
        })
    }

    /// Where to send, and whether to (not on hold).
    pub fn set_remote(&self, remote: Option<SocketAddr>, sending: bool) {
        if let Ok(mut s) = self.shared.lock() {
            if remote.is_some() {
                s.remote = remote;
            }
            s.sending = sending;
        }
    }

    /// The last `samples` samples heard (fewer if less came).
    pub fn heard(&self, samples: usize) -> Vec<i16> {
        self.shared
            .lock()
            .map(|s| {
                let skip = s.heard.len().saturating_sub(samples);
                s.heard.iter().skip(skip).copied().collect()
            })
            .unwrap_or_default()
    }

    /// Forgets what was heard (so that an expectation looks only at what comes next),
    /// and starts measuring gaps afresh.
    pub fn forget(&self) {
        if let Ok(mut s) = self.shared.lock() {
            s.heard.clear();
            s.longest_gap = Duration::ZERO;
            s.since_forget = 0;
        }
    }

    /// The longest time without a packet since the last [`MediaLeg::forget`], the
    /// silence going on now included.
    pub fn longest_gap(&self) -> Duration {
        self.shared
            .lock()
            .map(|s| {
                let now = s.last_arrival.map_or(Duration::ZERO, |at| at.elapsed());
                s.longest_gap.max(now)
            })
            .unwrap_or_default()
    }

    /// Packets received since the last [`MediaLeg::forget`].
    pub fn packets_since_forget(&self) -> u64 {
        self.shared
            .lock()
            .map(|s| s.since_forget)
            .unwrap_or_default()
    }

    /// (packets received, packets sent).
    pub fn packets(&self) -> (u64, u64) {
        self.shared
            .lock()
            .map(|s| (s.packets_in, s.packets_out))
            .unwrap_or_default()
    }

    /// Sends `hz` from now on (0: silence).
    pub fn set_tone(&self, hz: f64) {
        if let Ok(mut s) = self.shared.lock() {
            s.tone_hz = hz;
        }
    }

    /// Stops both tasks; the port is released.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn send(
    socket: Arc<tokio::net::UdpSocket>,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
) {
    let mut tone_hz = shared.lock().map(|s| s.tone_hz).unwrap_or_default();
    let mut tone = ToneGenerator::new(tone_hz, 0.3);
    let ssrc: u32 = rand::random();
    let (mut seq, mut ts): (u16, u32) = (rand::random(), rand::random());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (target, wanted) = shared
            .lock()
            .map(|s| (if s.sending { s.remote } else { None }, s.tone_hz))
            .unwrap_or_default();
        if wanted != tone_hz {
            tone_hz = wanted;
            tone = ToneGenerator::new(tone_hz, 0.3);
        }
        let frame = if tone_hz > 0.0 {
            tone.samples(160)
        } else {
            vec![0; 160]
        };
        let Some(target) = target else { continue };
        let mut packet = Vec::with_capacity(172);
        packet.extend_from_slice(&[0x80, 8]);
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&ts.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend(g711::encode_pcma(&frame));
        if socket.send_to(&packet, target).await.is_ok()
            && let Ok(mut s) = shared.lock()
        {
            s.packets_out += 1;
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(160);
    }
}

async fn receive(
    socket: Arc<tokio::net::UdpSocket>,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
) {
    let mut buf = [0u8; 2048];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv(&mut buf) => match r { Ok(n) => n, Err(_) => continue },
        };
        let Ok(rtp) = rtp_rs::RtpReader::new(&buf[..n]) else {
            continue;
        };
        let samples = match rtp.payload_type() {
            8 => g711::decode_pcma(rtp.payload()),
            0 => g711::decode_pcmu(rtp.payload()),
            _ => continue,
        };
        if let Ok(mut s) = shared.lock() {
            let now = Instant::now();
            if let Some(last) = s.last_arrival {
                s.longest_gap = s.longest_gap.max(now.duration_since(last));
            }
            s.last_arrival = Some(now);
            s.packets_in += 1;
            s.since_forget += 1;
            s.heard.extend(samples);
            let excess = s.heard.len().saturating_sub(KEPT);
            s.heard.drain(..excess);
        }
    }
}
