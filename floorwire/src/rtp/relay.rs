//! An RTP relay between two call legs (the B2BUA's media anchor).
//!
//! Each leg is a local socket the endpoint sends to. What arrives on leg A goes out of
//! leg B's socket to B's endpoint, and back. An endpoint's address is *latched* from
//! the first packet it sends (symmetric RTP, so NATed turrets work); until then the
//! address from its SDP is used. Packets from any other source are dropped and
//! counted, so a stray sender cannot hijack the call.
//!
//! RTCP, when the relay is given the legs' RTCP sockets (the odd ports), is passed by
//! the same task: from an endpoint's IP to the other endpoint's RTCP address (the port
//! it sent RTCP from, else its RTP port + 1). Every packet either way, RTP or RTCP,
//! counts as activity for [`RelayHandle::idle`].
//!
//! The sockets are shared (`Arc`): when the relay stops it lets go of them, and the
//! [`super::RelayAnchor`] hands them to the next call without closing and binding
//! again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::g711::{Law, convert};
use super::stats::StreamStats;

/// Source latching for one leg (sans-IO).
#[derive(Debug, Clone, Default)]
pub struct Latch {
    /// Where this leg's endpoint is: from SDP until latched, then from packets.
    pub remote: Option<SocketAddr>,
    latched: bool,
}

impl Latch {
    /// Starts from the SDP address, if known.
    pub fn new(sdp_remote: Option<SocketAddr>) -> Self {
        Self {
            remote: sdp_remote,
            latched: false,
        }
    }

    /// Whether a packet from `source` is the endpoint's; the first one latches.
    pub fn accept(&mut self, source: SocketAddr) -> bool {
        if !self.latched {
            self.remote = Some(source);
            self.latched = true;
            return true;
        }
        self.remote == Some(source)
    }

    /// True once a packet has fixed the address.
    pub fn is_latched(&self) -> bool {
        self.latched
    }
}

/// Counters of both directions, shared with whoever reports them.
#[derive(Debug, Clone)]
pub struct RelayStats {
    /// Received on leg A (from A's endpoint), forwarded towards B.
    pub a_to_b: StreamStats,
    /// Received on leg B, forwarded towards A.
    pub b_to_a: StreamStats,
    /// Packets that arrived before the other side's address was known.
    pub unroutable: u64,
    /// RTCP packets passed either way.
    pub rtcp: u64,
    /// When the last packet (RTP or RTCP, either way) arrived; the start until then.
    pub last_activity: Instant,
}

/// A running relay: read counters, stop it.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

/// Where copies of each direction go (recorders): (copies of what leg A's endpoint
/// sends, copies of what leg B's endpoint sends).
type Recorders = (Vec<SocketAddr>, Vec<SocketAddr>);

/// What signalling says of each endpoint: (A's address, B's address).
type Remotes = (Option<SocketAddr>, Option<SocketAddr>);

/// What the handle and the relay task share: one allocation a call, where a
/// cancellation token and two watch channels a relay cost the SIP core about a tenth
/// of a call's set-up.
#[derive(Debug)]
struct Shared {
    stats: Mutex<RelayStats>,
    /// Set once by `stop`; the task reads nothing more after it.
    stopped: AtomicBool,
    /// Bumped by every change of `control`, so the task locks only when there is one.
    version: AtomicU64,
    control: Mutex<Control>,
    /// Wakes the task for a stop or a change (a permit waits if it is busy).
    changed: Notify,
}

#[derive(Debug, Default)]
struct Control {
    remotes: Remotes,
    recorders: Recorders,
}

impl Shared {
    fn change(&self, apply: impl FnOnce(&mut Control)) {
        apply(&mut self.control.lock().unwrap_or_else(|p| p.into_inner()));
        self.version.fetch_add(1, Ordering::Release);
        self.changed.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

impl RelayHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// How long since the last packet either way (since the start when none came).
    pub fn idle(&self) -> std::time::Duration {
        let last = self
            .shared
            .stats
            .lock()
            .map(|s| s.last_activity)
            .unwrap_or_else(|p| p.into_inner().last_activity);
        last.elapsed()
    }

    /// Stops the relay task: from now on it reads nothing more, and it ends (letting
    /// go of the sockets) when it next runs.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.changed.notify_one();
    }

    /// New endpoint addresses from signalling (a re-INVITE moved a party): a leg whose
    /// address changed forgets its latch and starts again from the new address.
    pub fn set_remotes(&self, a_remote: Option<SocketAddr>, b_remote: Option<SocketAddr>) {
        self.shared.change(|c| c.remotes = (a_remote, b_remote));
    }

    /// From now on, a copy of every RTP packet leg A's endpoint sends goes to each of
    /// `from_a` (out of leg B's socket), and of every packet leg B's endpoint sends to
    /// each of `from_b` (out of leg A's): the recorders' streams.
    pub fn set_recorders(&self, from_a: Vec<SocketAddr>, from_b: Vec<SocketAddr>) {
        self.shared.change(|c| c.recorders = (from_a, from_b));
    }
}

/// G.711 transcoding between the legs: what leg A's endpoint sends and receives in
/// `a_side`, leg B's in `b_side`. Other payloads (telephone-event) pass untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transcode {
    pub a_side: Law,
    pub b_side: Law,
}

/// Two legs and what is known of their endpoints.
#[derive(Debug)]
pub struct Relay {
    pub leg_a: Arc<UdpSocket>,
    pub leg_b: Arc<UdpSocket>,
    pub a_remote: Option<SocketAddr>,
    pub b_remote: Option<SocketAddr>,
    pub clock_rate: u32,
    /// A-law↔µ-law conversion when the two sides share no codec.
    pub transcode: Option<Transcode>,
    /// The legs' RTCP sockets (A side, B side), when RTCP is to be passed.
    pub rtcp: Option<(Arc<UdpSocket>, Arc<UdpSocket>)>,
}

impl Relay {
    /// Spawns the relay task (RTP and RTCP, both ways); it ends, letting go of the
    /// sockets, when the handle's `stop` (or `shutdown`) fires. Once stopped it
    /// forwards nothing more, even before its task has run to its end: the sockets can
    /// serve another call at once.
    pub fn spawn(self, shutdown: &CancellationToken) -> RelayHandle {
        let shared = Arc::new(Shared {
            stats: Mutex::new(RelayStats {
                a_to_b: StreamStats::new(self.clock_rate),
                b_to_a: StreamStats::new(self.clock_rate),
                unroutable: 0,
                rtcp: 0,
                last_activity: Instant::now(),
            }),
            stopped: AtomicBool::new(false),
            version: AtomicU64::new(0),
            control: Mutex::new(Control {
                remotes: (self.a_remote, self.b_remote),
                recorders: Default::default(),
            }),
            changed: Notify::new(),
        });
        let handle = RelayHandle {
            shared: shared.clone(),
        };
        tokio::spawn(self.run(shared, shutdown.clone()));
        handle
    }

    async fn run(self, shared: Arc<Shared>, shutdown: CancellationToken) {
        let mut copies: Recorders = (Vec::new(), Vec::new());
        let mut latch_a = Latch::new(self.a_remote);
        let mut latch_b = Latch::new(self.b_remote);
        let mut known = (self.a_remote, self.b_remote);
        let mut seen = 0u64;
        let origin = Instant::now();
        // One buffer for every socket (the task waits for any to be readable, then
        // reads that one), allocated when the first packet arrives: a call whose
        // endpoints send no media costs none.
        let mut buf = Vec::new();
        let (rtcp_a, rtcp_b) = match &self.rtcp {
            Some((a, b)) => (Some(&**a), Some(&**b)),
            None => (None, None),
        };
        // Where each endpoint sends RTCP from, once it has.
        let mut rtcp_from_a: Option<SocketAddr> = None;
        let mut rtcp_from_b: Option<SocketAddr> = None;
        // Stopped, or the service shutting down: either way nothing more is read.
        let over = {
            let shutdown = shutdown.clone();
            let shared = shared.clone();
            move || shared.is_stopped() || shutdown.is_cancelled()
        };
        let shutdown = shutdown.cancelled_owned();
        tokio::pin!(shutdown);
        loop {
            if over() {
                return;
            }
            let version = shared.version.load(Ordering::Acquire);
            if version != seen {
                seen = version;
                let control = shared.control.lock().unwrap_or_else(|p| p.into_inner());
                let (a, b) = control.remotes;
                if a != known.0 && a.is_some() {
                    latch_a = Latch::new(a);
                }
                if b != known.1 && b.is_some() {
                    latch_b = Latch::new(b);
                }
                known = (a, b);
                copies.clone_from(&control.recorders);
            }
            let ready = tokio::select! {
                _ = &mut shutdown => return,
                _ = shared.changed.notified() => continue,
                r = readable(Some(&self.leg_a)) => r.map(|s| (Socket::RtpA, s)),
                r = readable(Some(&self.leg_b)) => r.map(|s| (Socket::RtpB, s)),
                r = readable(rtcp_a) => r.map(|s| (Socket::RtcpA, s)),
                r = readable(rtcp_b) => r.map(|s| (Socket::RtcpB, s)),
            };
            let Ok((ready, socket)) = ready else { continue };
            // Stopped while waiting: what arrived is for the legs' next call.
            if over() {
                return;
            }
            if buf.is_empty() {
                buf.resize(PACKET_BUFFER, 0);
            }
            let Ok((len, source)) = socket.try_recv_from(&mut buf) else {
                continue;
            };
            match ready {
                Socket::RtpA => {
                    let laws = self.transcode.map(|t| (t.a_side, t.b_side));
                    let packet = transcoded(&mut buf[..len], laws);
                    forward(
                        packet,
                        source,
                        &mut latch_a,
                        &latch_b,
                        &self.leg_b,
                        &copies.0,
                        &shared.stats,
                        origin,
                        true,
                    );
                }
                Socket::RtpB => {
                    let laws = self.transcode.map(|t| (t.b_side, t.a_side));
                    let packet = transcoded(&mut buf[..len], laws);
                    forward(
                        packet,
                        source,
                        &mut latch_b,
                        &latch_a,
                        &self.leg_a,
                        &copies.1,
                        &shared.stats,
                        origin,
                        false,
                    );
                }
                Socket::RtcpA => {
                    if let Some(out) = rtcp_b {
                        let from = RtcpSide {
                            rtp: known.0,
                            rtcp: &mut rtcp_from_a,
                        };
                        pass_rtcp(
                            &buf[..len],
                            source,
                            from,
                            known.1,
                            rtcp_from_b,
                            out,
                            &shared.stats,
                        );
                    }
                }
                Socket::RtcpB => {
                    if let Some(out) = rtcp_a {
                        let from = RtcpSide {
                            rtp: known.1,
                            rtcp: &mut rtcp_from_b,
                        };
                        pass_rtcp(
                            &buf[..len],
                            source,
                            from,
                            known.0,
                            rtcp_from_a,
                            out,
                            &shared.stats,
                        );
                    }
                }
            }
        }
    }
}

/// Which of the relay's sockets has a datagram.
#[derive(Debug, Clone, Copy)]
enum Socket {
    RtpA,
    RtpB,
    RtcpA,
    RtcpB,
}

/// The sending side of an RTCP packet: its endpoint's RTP address from signalling, and
/// where it sends RTCP from (learnt here).
struct RtcpSide<'a> {
    rtp: Option<SocketAddr>,
    rtcp: &'a mut Option<SocketAddr>,
}

/// Passes one RTCP packet from `from`'s endpoint (checked by IP) to the other
/// endpoint's RTCP address: where it sends RTCP from, else its RTP port + 1.
fn pass_rtcp(
    packet: &[u8],
    source: SocketAddr,
    from: RtcpSide<'_>,
    to_rtp: Option<SocketAddr>,
    to_rtcp: Option<SocketAddr>,
    out: &UdpSocket,
    stats: &Mutex<RelayStats>,
) {
    if from.rtp.is_none_or(|r| r.ip() != source.ip()) {
        return;
    }
    *from.rtcp = Some(source);
    let destination = to_rtcp.or(to_rtp.map(|r| SocketAddr::new(r.ip(), r.port() + 1)));
    if let Some(to) = destination {
        let _ = out.try_send_to(packet, to);
        note_rtcp(stats);
    }
}

/// Size of the relay's packet buffer: more than any RTP packet on an Ethernet path.
const PACKET_BUFFER: usize = 2048;

/// Waits until `socket` has a datagram to read, and gives it back; never ready
/// without a socket (no RTCP passed).
async fn readable(socket: Option<&UdpSocket>) -> std::io::Result<&UdpSocket> {
    match socket {
        Some(socket) => socket.readable().await.map(|()| socket),
        None => std::future::pending().await,
    }
}

/// Rewrites a G.711 packet from one law to the other in place (payload type and
/// payload); anything else is returned untouched.
fn transcoded(packet: &mut [u8], laws: Option<(Law, Law)>) -> &[u8] {
    let Some((from, to)) = laws else {
        return packet;
    };
    let range = match rtp_rs::RtpReader::new(packet) {
        Ok(rtp) if rtp.payload_type() == from.payload_type() => {
            let start = rtp.payload_offset();
            start..start + rtp.payload().len()
        }
        _ => return packet,
    };
    packet[1] = (packet[1] & 0x80) | to.payload_type();
    convert(&mut packet[range], from, to);
    packet
}

#[allow(clippy::too_many_arguments)] // one call site, the relay loop's two arms
fn forward(
    packet: &[u8],
    source: SocketAddr,
    from: &mut Latch,
    to: &Latch,
    out: &UdpSocket,
    copies: &[SocketAddr],
    stats: &Mutex<RelayStats>,
    origin: Instant,
    a_to_b: bool,
) {
    let accepted = from.accept(source);
    let destination = to.remote;
    if let Ok(mut s) = stats.lock() {
        let stream = if a_to_b { &mut s.a_to_b } else { &mut s.b_to_a };
        if !accepted {
            stream.foreign_dropped += 1;
            return;
        }
        stream.on_packet(origin.elapsed(), packet);
        s.last_activity = Instant::now();
        if destination.is_none() {
            s.unroutable += 1;
        }
    }
    if let (true, Some(destination)) = (accepted, destination) {
        // A full socket buffer drops this packet only; the relay keeps reading.
        let _ = out.try_send_to(packet, destination);
    }
    if accepted {
        for copy in copies {
            let _ = out.try_send_to(packet, *copy);
        }
    }
}

fn note_rtcp(stats: &Mutex<RelayStats>) {
    if let Ok(mut s) = stats.lock() {
        s.rtcp += 1;
        s.last_activity = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latch_first_source_then_refuse_others() {
        let sdp: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        let real: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let other: SocketAddr = "127.0.0.1:5002".parse().expect("addr");
        let mut l = Latch::new(Some(sdp));
        assert_eq!(l.remote, Some(sdp));
        assert!(l.accept(real));
        assert!(l.accept(real));
        assert!(!l.accept(other));
        assert_eq!(l.remote, Some(real));
    }
}
