//! Media anchoring for a B2BUA: each call gets one local RTP address per leg, and a
//! [`Relay`] between them once signalling says where the endpoints are.
//!
//! The B2BUA core speaks to the [`MediaAnchor`] trait (so it stays sans-IO and is
//! tested with a fake); [`RelayAnchor`] is the real one, binding ports from a
//! [`PortPool`] on one address. A call's [`MediaMapping`] is plain data: an SBC pair
//! replicates it, and the standby binds the very same ports on takeover.
//!
//! Sockets outlive calls: when a call ends its legs' sockets stay bound and registered
//! with the reactor, and wait in a first-in first-out queue for a later call. A leg is
//! reused once it has rested [`LEG_REST`] (late RTP of the old call has stopped: the
//! relay latches the first source it hears), else a new pair is bound; only when the
//! range is all bound does a less rested leg serve. What arrived while it waited is
//! thrown away before reuse. Creating, binding, registering and closing four sockets
//! a call was a seventh of a TPO's CPU under load; a reused leg costs a few reads.
//! Bound legs stay within the open-file limit, [`DESCRIPTORS_KEPT`] kept for the rest
//! of the process: past it a free leg serves before its rest, as when the range is
//! all bound.
//!
//! A stopped relay reads its sockets no more, even before its task has run to its
//! end. Legs whose relay task has ended are preferred; when none has, the oldest leg
//! serves anyway: that happens on a starved runtime (at 10,000 calls/s, with one
//! worker busy with the SIP core, ended calls' relays waiting to run held every leg
//! and new calls got 503), where the old task cannot run alongside the new relay.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::pool::PortPool;
use super::relay::{Relay, RelayHandle, Transcode};
use crate::error::Error;

/// Where one call's media goes: the local address of each leg and what signalling
/// said of each endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaMapping {
    /// Our address facing leg A's endpoint (put in the SDP sent to A).
    pub a_local: SocketAddr,
    /// Our address facing leg B's endpoint.
    pub b_local: SocketAddr,
    /// A's endpoint, from A's SDP.
    pub a_remote: Option<SocketAddr>,
    /// B's endpoint, from B's SDP.
    pub b_remote: Option<SocketAddr>,
    /// G.711 conversion between the legs, when they share no codec.
    pub transcode: Option<Transcode>,
}

/// Where one recorder wants a call's streams: (what leg A's endpoint sends, what leg
/// B's sends); `None` for a stream it refused.
pub type RecorderStreams = (Option<SocketAddr>, Option<SocketAddr>);

/// What a B2BUA asks of its media plane. `call` is the B2BUA's call number.
pub trait MediaAnchor {
    /// Reserves a local address for each leg of a new call: (A side, B side).
    fn open(&mut self, call: u64) -> Result<(SocketAddr, SocketAddr), Error>;
    /// Signalling learnt where an endpoint is (or that transcoding is needed): relay
    /// per `mapping` from now on.
    fn update(&mut self, call: u64, mapping: &MediaMapping);
    /// Takes over a call from a replicated mapping: the same local ports, relaying at
    /// once. Fails if a port cannot be bound.
    fn restore(&mut self, call: u64, mapping: &MediaMapping) -> Result<(), Error>;
    /// The call ended: stop relaying, give the ports back.
    fn close(&mut self, call: u64);
    /// How long the call's relay has gone without a packet either way (since it
    /// started when none came yet); `None` when the call has no relay running.
    fn idle(&self, _call: u64) -> Option<std::time::Duration> {
        None
    }
    /// Copies of the call's media go to recorders from now on: each entry is where
    /// one recorder wants (what leg A's endpoint sends, what leg B's sends).
    fn record(&mut self, _call: u64, _recorders: &[RecorderStreams]) {}
}

/// One leg's sockets: RTP and the RTCP port above it, bound and registered with the
/// reactor; shared with the call's relay while it runs.
#[derive(Debug)]
struct LegSockets {
    port: u16,
    rtp: Arc<tokio::net::UdpSocket>,
    rtcp: Arc<tokio::net::UdpSocket>,
    /// When its last call let it go.
    idle_since: Option<Instant>,
}

impl LegSockets {
    /// True once no relay task holds the sockets any more (it has run to its end).
    fn is_free(&mut self) -> bool {
        Arc::get_mut(&mut self.rtp).is_some() && Arc::get_mut(&mut self.rtcp).is_some()
    }

    /// Free, and idle for at least `rest`.
    fn has_rested(&mut self, rest: Duration) -> bool {
        self.idle_since.is_some_and(|t| t.elapsed() >= rest) && self.is_free()
    }

    /// True for a leg that served a call and has not been emptied since.
    fn needs_draining(&self) -> bool {
        self.idle_since.is_some()
    }
}

/// Throws away what arrived at a new call's legs since their last call let go (late
/// packets of the previous endpoints), so the call's latch sees only its own. One
/// `poll(2)` over the four sockets finds those with something queued (usually none),
/// and only those are read. Reads the kernel's queue directly: tokio's
/// `try_recv_from` would skip the read when the reactor has not yet seen the socket
/// readable. At most `DRAIN_READS` a socket, so a flood cannot hold the caller.
fn drain(a: &mut LegSockets, b: &mut LegSockets) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    if !a.needs_draining() && !b.needs_draining() {
        return;
    }
    let sockets = [&*a.rtp, &*a.rtcp, &*b.rtp, &*b.rtcp];
    let mut fds = sockets.map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN));
    // A failed poll reads every socket, as if each had something.
    let polled = poll(&mut fds, PollTimeout::ZERO).is_ok();
    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    for (socket, fd) in sockets.iter().zip(&fds) {
        if polled && fd.revents().is_some_and(|r| r.is_empty()) {
            continue;
        }
        let raw = socket2::SockRef::from(*socket);
        for _ in 0..DRAIN_READS {
            if raw.recv_from(&mut scratch).is_err() {
                break;
            }
        }
    }
    a.idle_since = None;
    b.idle_since = None;
}

/// How many of the oldest resting legs are looked at for one whose relay task has
/// ended, when a leg must be reused before its rest is over.
const FREE_LEG_SEARCH: usize = 16;

/// How long an ended call's leg waits before a new call gets it, while unbound ports
/// remain: the old far end may still send for a moment (it has not had our BYE yet).
pub const LEG_REST: Duration = Duration::from_secs(2);

/// Datagrams thrown away at most per socket when a leg is reused.
const DRAIN_READS: usize = 256;

/// Descriptors of the open-file limit left to everything but RTP legs (SIP, the TSS,
/// the call-record spool, admin connections, recorders): resting legs stay bound, and
/// at a few thousand calls a second they would otherwise take every descriptor — the
/// spool could then not write a call record.
pub const DESCRIPTORS_KEPT: usize = 1024;

/// Port pairs (two descriptors each) the open-file limit leaves room for, keeping
/// [`DESCRIPTORS_KEPT`] for the rest; unbounded when the limit is unknown.
fn pairs_allowed_by_file_limit() -> usize {
    crate::util::open_file_limit().map_or(usize::MAX, |limit| {
        (limit.saturating_sub(DESCRIPTORS_KEPT) / 2).max(1)
    })
}

#[derive(Debug)]
struct AnchoredCall {
    a: LegSockets,
    b: LegSockets,
    relay: Option<RelayHandle>,
    transcode: Option<Transcode>,
}

/// Packets relayed by the calls that have ended, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayTotals {
    /// RTP from leg A's endpoint towards leg B's.
    pub a_to_b: u64,
    /// RTP from leg B's endpoint towards leg A's.
    pub b_to_a: u64,
    /// RTCP, either way.
    pub rtcp: u64,
    /// RTP dropped because it came from a source other than the latched endpoint.
    pub foreign_dropped: u64,
}

/// The real media plane: RTP relays on `ip`, ports from a range.
#[derive(Debug)]
pub struct RelayAnchor {
    ip: IpAddr,
    pool: PortPool,
    /// Legs of ended calls, still bound, oldest first.
    idle: VecDeque<LegSockets>,
    /// How long an idle leg rests before reuse (while unbound ports remain).
    rest: Duration,
    calls: crate::util::FastMap<u64, AnchoredCall>,
    shutdown: CancellationToken,
    totals: RelayTotals,
    /// Port pairs bound at most (in calls and resting): what the open-file limit
    /// leaves room for.
    max_bound: usize,
    /// Whether reaching `max_bound` was logged.
    capped_logged: bool,
}

impl RelayAnchor {
    /// Relays on `ip` with RTP ports from `first..=last`; every relay stops when
    /// `shutdown` fires.
    pub fn new(
        ip: IpAddr,
        first: u16,
        last: u16,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        let pool = PortPool::new(first, last)?;
        let max_bound = pairs_allowed_by_file_limit();
        if max_bound < pool.available() {
            tracing::info!(
                pairs = pool.available(),
                bound_at_most = max_bound,
                "RTP port range larger than the open-file limit allows: legs bound at most"
            );
        }
        Ok(Self {
            ip,
            pool,
            idle: VecDeque::new(),
            rest: LEG_REST,
            calls: Default::default(),
            shutdown,
            totals: RelayTotals::default(),
            max_bound,
            capped_logged: false,
        })
    }

    /// Sets how many port pairs may be bound at once (default: what the open-file
    /// limit allows, [`DESCRIPTORS_KEPT`] kept for the rest).
    pub fn set_max_bound_pairs(&mut self, pairs: usize) {
        self.max_bound = pairs;
    }

    /// Calls holding ports now.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call holds ports.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// What the relays of ended calls carried.
    pub fn totals(&self) -> RelayTotals {
        self.totals
    }

    /// Sets how long an ended call's leg rests before reuse (default [`LEG_REST`]).
    pub fn set_leg_rest(&mut self, rest: Duration) {
        self.rest = rest;
    }

    /// RTP port pairs free now (never bound, or bound and waiting for a call; a
    /// waiting leg whose stopped relay's task has yet to end counts too).
    pub fn ports_available(&self) -> usize {
        let bindable = self
            .pool
            .available()
            .min(self.max_bound.saturating_sub(self.pool.taken()));
        bindable + self.idle.len()
    }

    /// Binds RTP and RTCP on `port`, `port + 1` and registers them with the reactor
    /// (so it must run inside the tokio runtime).
    fn bind_pair(&self, port: u16) -> std::io::Result<LegSockets> {
        let rtp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port))?;
        let rtcp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1))?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        Ok(LegSockets {
            port,
            rtp: Arc::new(tokio::net::UdpSocket::from_std(rtp)?),
            rtcp: Arc::new(tokio::net::UdpSocket::from_std(rtcp)?),
            idle_since: None,
        })
    }

    /// A leg for a new call: the oldest idle one if it has rested, else a newly bound
    /// pair, else (no pair left to bind) the oldest idle one whose relay task has
    /// ended among the 16 oldest ([`FREE_LEG_SEARCH`]), else the oldest idle one (its
    /// relay stopped, its task yet to run).
    fn take_leg(&mut self) -> Result<LegSockets, Error> {
        let rest = self.rest;
        if self.idle.front_mut().is_some_and(|l| l.has_rested(rest))
            && let Some(leg) = self.idle.pop_front()
        {
            return Ok(leg);
        }
        let unbound = match self.bind_next() {
            Ok(leg) => return Ok(leg),
            Err(e) => e,
        };
        // A relay task that has not ended yet is only ever found on a starved runtime
        // (one worker busy with the SIP core): it cannot run at the same time as this
        // call's relay, and stopped, it reads nothing more. With workers to spare the
        // tasks end at once and a free leg is found.
        // The search is bounded: past the first few, the oldest leg will do.
        let free = self
            .idle
            .iter_mut()
            .take(FREE_LEG_SEARCH)
            .position(|l| l.is_free())
            .unwrap_or(0);
        self.idle.remove(free).ok_or(unbound)
    }

    /// The next pool pair that binds; busy pairs (another process) are skipped and go
    /// to the back of the pool; any other failure (no descriptor left) ends the search.
    fn bind_next(&mut self) -> Result<LegSockets, Error> {
        if self.pool.taken() >= self.max_bound {
            if !self.capped_logged {
                self.capped_logged = true;
                tracing::warn!(
                    pairs = self.max_bound,
                    "RTP legs at the open-file limit: resting legs are reused early"
                );
            }
            return Err(Error::DescriptorsExhausted {
                pairs: self.max_bound,
            });
        }
        for _ in 0..self.pool.available() {
            let port = self.pool.allocate()?;
            match self.bind_pair(port) {
                Ok(leg) => return Ok(leg),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    // Busy for now (another process): back to the end of the pool, not
                    // lost.
                    tracing::debug!(port, error = %e, "RTP port busy, trying the next pair");
                    self.pool.release(port);
                }
                Err(e) => {
                    // Out of descriptors, say: no other port would do better.
                    self.pool.release(port);
                    tracing::warn!(port, error = %e, "cannot bind an RTP port pair");
                    return Err(e.into());
                }
            }
        }
        // Every pair left is busy (each went back to the pool above): none to hand out.
        Err(Error::PortsExhausted {
            first: self.pool.first(),
            last: self.pool.last(),
        })
    }

    fn release(&mut self, call: AnchoredCall) {
        if let Some(relay) = &call.relay {
            relay.stop();
            let stats = relay.stats();
            self.totals.a_to_b += stats.a_to_b.packets;
            self.totals.b_to_a += stats.b_to_a.packets;
            self.totals.rtcp += stats.rtcp;
            self.totals.foreign_dropped +=
                stats.a_to_b.foreign_dropped + stats.b_to_a.foreign_dropped;
        }
        self.park(call.a);
        self.park(call.b);
    }

    /// Puts a leg at the back of the idle queue, resting from now.
    fn park(&mut self, mut leg: LegSockets) {
        leg.idle_since = Some(Instant::now());
        self.idle.push_back(leg);
    }

    fn start_relay(&self, call: &mut AnchoredCall, mapping: &MediaMapping) {
        if call.relay.is_some() {
            return;
        }
        let relay = Relay {
            leg_a: call.a.rtp.clone(),
            leg_b: call.b.rtp.clone(),
            a_remote: mapping.a_remote,
            b_remote: mapping.b_remote,
            clock_rate: 8000,
            transcode: mapping.transcode,
            rtcp: Some((call.a.rtcp.clone(), call.b.rtcp.clone())),
        };
        call.relay = Some(relay.spawn(&self.shutdown));
        call.transcode = mapping.transcode;
    }

    /// The idle leg on `port`, if one is waiting (its relay stopped), else `port`
    /// bound anew.
    fn take_port(&mut self, port: u16) -> Result<LegSockets, Error> {
        let waiting = self.idle.iter().position(|l| l.port == port);
        if let Some(leg) = waiting.and_then(|at| self.idle.remove(at)) {
            return Ok(leg);
        }
        if !self.pool.reserve(port) {
            return Err(Error::PortsExhausted {
                first: port,
                last: port,
            });
        }
        self.bind_pair(port).map_err(|e| {
            self.pool.release(port);
            Error::from(e)
        })
    }
}

impl MediaAnchor for RelayAnchor {
    fn open(&mut self, call: u64) -> Result<(SocketAddr, SocketAddr), Error> {
        let mut a = self.take_leg()?;
        let mut b = match self.take_leg() {
            Ok(b) => b,
            Err(e) => {
                self.park(a);
                return Err(e);
            }
        };
        drain(&mut a, &mut b);
        let local = (
            SocketAddr::new(self.ip, a.port),
            SocketAddr::new(self.ip, b.port),
        );
        self.calls.insert(
            call,
            AnchoredCall {
                a,
                b,
                relay: None,
                transcode: None,
            },
        );
        Ok(local)
    }

    fn update(&mut self, call: u64, mapping: &MediaMapping) {
        let Some(mut anchored) = self.calls.remove(&call) else {
            return;
        };
        // Transcoding is fixed when the relay starts (the codec plan is made once, at
        // call set-up); later updates only move endpoints.
        if let Some(relay) = &anchored.relay {
            relay.set_remotes(mapping.a_remote, mapping.b_remote);
        } else {
            self.start_relay(&mut anchored, mapping);
        }
        self.calls.insert(call, anchored);
    }

    fn restore(&mut self, call: u64, mapping: &MediaMapping) -> Result<(), Error> {
        let mut a = self.take_port(mapping.a_local.port())?;
        let mut b = match self.take_port(mapping.b_local.port()) {
            Ok(b) => b,
            Err(e) => {
                self.park(a);
                return Err(e);
            }
        };
        drain(&mut a, &mut b);
        let mut anchored = AnchoredCall {
            a,
            b,
            relay: None,
            transcode: None,
        };
        self.start_relay(&mut anchored, mapping);
        self.calls.insert(call, anchored);
        Ok(())
    }

    fn close(&mut self, call: u64) {
        if let Some(anchored) = self.calls.remove(&call) {
            self.release(anchored);
        }
    }

    fn idle(&self, call: u64) -> Option<std::time::Duration> {
        self.calls.get(&call)?.relay.as_ref().map(RelayHandle::idle)
    }

    fn record(&mut self, call: u64, recorders: &[RecorderStreams]) {
        if let Some(relay) = self.calls.get(&call).and_then(|c| c.relay.as_ref()) {
            relay.set_recorders(
                recorders.iter().filter_map(|r| r.0).collect(),
                recorders.iter().filter_map(|r| r.1).collect(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ports_return_to_the_pool_and_restore_binds_the_same_ports() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let shutdown = CancellationToken::new();
        let mut anchor = RelayAnchor::new(ip, 47000, 47011, shutdown.clone()).expect("pool");
        let before = anchor.ports_available();
        let (a, b) = anchor.open(1).expect("open");
        assert_ne!(a.port(), b.port());
        assert_eq!(anchor.ports_available(), before - 2);
        let mapping = MediaMapping {
            a_local: a,
            b_local: b,
            a_remote: Some("127.0.0.1:40000".parse().expect("addr")),
            b_remote: None,
            transcode: None,
        };
        // Closed: the ports are available again (kept bound for the next call).
        anchor.close(1);
        assert_eq!(anchor.ports_available(), before);
        assert!(anchor.is_empty());
        drop(anchor);
        // A second anchor (the standby) takes the same ports over.
        let mut standby = RelayAnchor::new(ip, 47000, 47011, shutdown.clone()).expect("pool");
        standby.restore(7, &mapping).expect("restore");
        assert_eq!(standby.ports_available(), before - 2);
        // The restored ports are really bound: binding them again fails.
        assert!(std::net::UdpSocket::bind(a).is_err());
        standby.close(7);
        shutdown.cancel();
    }

    /// Lets the cancelled relay tasks run to their end (the test runtime has one
    /// thread: each yield runs what is ready before the test goes on).
    async fn until_free(anchor: &mut RelayAnchor) {
        for _ in 0..100 {
            if anchor.idle.iter_mut().all(|l| l.is_free()) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the relay task never let go of its sockets");
    }

    /// Starts call `call`'s relay on its legs `local` (endpoints unknown yet), ends
    /// the call, and waits until its relay has let go of the legs.
    async fn relay_and_end(anchor: &mut RelayAnchor, call: u64, local: (SocketAddr, SocketAddr)) {
        let mapping = MediaMapping {
            a_local: local.0,
            b_local: local.1,
            a_remote: None,
            b_remote: None,
            transcode: None,
        };
        anchor.update(call, &mapping);
        anchor.close(call);
        until_free(anchor).await;
    }

    #[tokio::test]
    async fn a_reused_leg_has_rested_and_forgets_the_previous_call() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let shutdown = CancellationToken::new();
        let mut anchor = RelayAnchor::new(ip, 47100, 47131, shutdown.clone()).expect("pool");
        anchor.set_leg_rest(Duration::from_secs(3600));
        let (a, b) = anchor.open(1).expect("open");
        let old_a = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("old a");
        let new_a = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("new a");
        let far_b = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("far b");
        let mapping = |a_remote| MediaMapping {
            a_local: a,
            b_local: b,
            a_remote,
            b_remote: Some(far_b.local_addr().expect("addr")),
            transcode: None,
        };
        anchor.update(1, &mapping(Some(old_a.local_addr().expect("addr"))));
        anchor.close(1);
        until_free(&mut anchor).await;
        // Not rested yet, and unbound ports remain: a new call gets other ports.
        let (c, d) = anchor.open(2).expect("open");
        assert!(![a, b].contains(&c) && ![a, b].contains(&d));
        anchor.close(2);
        // From now on every idle leg counts as rested.
        anchor.set_leg_rest(Duration::ZERO);
        // A late packet of the old call waits in leg A's socket, unseen by the reactor.
        old_a.send_to(b"late", a).await.expect("late");
        // Rested: the next call gets the oldest legs, emptied; its endpoint, unknown
        // from SDP, is latched from its own first packet.
        assert_eq!(anchor.open(3).expect("open"), (a, b));
        let mapping3 = MediaMapping {
            a_remote: None,
            ..mapping(None)
        };
        anchor.update(3, &mapping3);
        new_a.send_to(b"fresh", a).await.expect("fresh");
        let mut buf = [0u8; 64];
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), far_b.recv_from(&mut buf))
            .await
            .expect("relayed in time")
            .expect("recv");
        assert_eq!(&buf[..len], b"fresh");
        anchor.close(3);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn legs_stay_within_the_descriptor_budget() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let shutdown = CancellationToken::new();
        // A range of 16 pairs, but descriptors for two pairs: one call.
        let mut anchor = RelayAnchor::new(ip, 47300, 47331, shutdown.clone()).expect("pool");
        anchor.set_leg_rest(Duration::from_secs(3600));
        anchor.set_max_bound_pairs(2);
        assert_eq!(anchor.ports_available(), 2);
        let (a, b) = anchor.open(1).expect("open");
        assert_eq!(anchor.ports_available(), 0);
        assert!(matches!(
            anchor.open(2),
            Err(Error::DescriptorsExhausted { pairs: 2 })
        ));
        relay_and_end(&mut anchor, 1, (a, b)).await;
        // Not rested, but no more may be bound: the same legs serve the next call.
        assert_eq!(anchor.open(3).expect("the same legs, not a 503"), (a, b));
        assert_eq!(anchor.pool.taken(), 2, "nothing more bound");
        anchor.close(3);
        shutdown.cancel();
    }

    /// At the descriptor cap, an ended call's legs serve the next call before its
    /// relay's task has even run again; that relay, stopped, forwards nothing of the
    /// new call's: only the new relay does.
    #[tokio::test]
    async fn legs_serve_again_before_the_stopped_relay_has_run() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let shutdown = CancellationToken::new();
        let mut anchor = RelayAnchor::new(ip, 47400, 47431, shutdown.clone()).expect("pool");
        anchor.set_leg_rest(Duration::from_secs(3600));
        anchor.set_max_bound_pairs(2);
        let endpoint = || async {
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("endpoint")
        };
        let (old_a, old_b, new_a, new_b) = (
            endpoint().await,
            endpoint().await,
            endpoint().await,
            endpoint().await,
        );
        let (a, b) = anchor.open(1).expect("open");
        let mapping = |far_a: &tokio::net::UdpSocket, far_b: &tokio::net::UdpSocket| MediaMapping {
            a_local: a,
            b_local: b,
            a_remote: Some(far_a.local_addr().expect("addr")),
            b_remote: Some(far_b.local_addr().expect("addr")),
            transcode: None,
        };
        anchor.update(1, &mapping(&old_a, &old_b));
        // Let call 1's relay start waiting on its sockets.
        tokio::task::yield_now().await;
        anchor.close(1);
        // No yield: call 1's relay task has not run since it was stopped.
        assert_eq!(anchor.open(2).expect("the same legs, not a 503"), (a, b));
        anchor.update(2, &mapping(&new_a, &new_b));
        new_a.send_to(b"call two", a).await.expect("send");
        let mut buf = [0u8; 64];
        let (len, _) = tokio::time::timeout(Duration::from_secs(2), new_b.recv_from(&mut buf))
            .await
            .expect("relayed in time")
            .expect("recv");
        assert_eq!(&buf[..len], b"call two");
        let stray =
            tokio::time::timeout(Duration::from_millis(200), old_b.recv_from(&mut buf)).await;
        assert!(
            stray.is_err(),
            "the stopped relay forwarded to call 1's endpoint"
        );
        anchor.close(2);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn with_the_range_all_bound_a_free_leg_serves_before_its_rest() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let shutdown = CancellationToken::new();
        // Two pairs: one call.
        let mut anchor = RelayAnchor::new(ip, 47200, 47203, shutdown.clone()).expect("pool");
        let (a, b) = anchor.open(1).expect("open");
        relay_and_end(&mut anchor, 1, (a, b)).await;
        let (c, d) = anchor.open(2).expect("the same legs, not a 503");
        assert_eq!((c, d), (a, b));
        assert!(anchor.open(3).is_err(), "no pair left");
        anchor.close(2);
        shutdown.cancel();
    }

    /// The last unbound pair held by another process: the call is refused and the
    /// pair stays in the pool (it was once taken for good by the refusal itself).
    #[tokio::test]
    async fn a_busy_last_pair_is_refused_not_lost() {
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let shutdown = CancellationToken::new();
        // Three pairs; the third is held by someone else.
        let held = std::net::UdpSocket::bind("127.0.0.1:47504").expect("hold 47504");
        let mut anchor = RelayAnchor::new(ip, 47500, 47505, shutdown.clone()).expect("pool");
        anchor.set_leg_rest(Duration::from_secs(3600));
        assert_eq!(anchor.ports_available(), 3);
        let (a, b) = anchor.open(1).expect("open");
        assert_eq!(anchor.ports_available(), 1);
        assert!(matches!(
            anchor.open(2),
            Err(Error::PortsExhausted {
                first: 47500,
                last: 47505
            })
        ));
        assert_eq!(
            anchor.ports_available(),
            1,
            "the busy pair is still counted"
        );
        relay_and_end(&mut anchor, 1, (a, b)).await;
        assert_eq!(anchor.ports_available(), 3);
        // Let go by the other process, the pair serves a call.
        drop(held);
        let (c, _) = anchor.open(3).expect("open");
        assert_eq!(c.port(), 47504);
        anchor.close(3);
        assert_eq!(anchor.ports_available(), 3);
        shutdown.cancel();
    }
}
