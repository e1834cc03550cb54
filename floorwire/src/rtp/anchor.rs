//! Media anchoring for a B2BUA: each call gets one local RTP address per leg, and a
//! [`Relay`] between them once signalling says where the endpoints are.
//!
//! The B2BUA core speaks to the [`MediaAnchor`] trait (so it stays sans-IO and is
//! tested with a fake); [`RelayAnchor`] is the real one, binding ports from a
//! [`PortPool`] on one address. A call's [`MediaMapping`] is plain data: an SBC pair
//! replicates it, and the standby binds the very same ports on takeover.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

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

/// One leg's sockets: RTP and the RTCP port above it (kept bound so nobody else takes
/// it).
#[derive(Debug)]
struct LegSockets {
    port: u16,
    rtp: Option<std::net::UdpSocket>,
    /// Handed to the relay with `rtp`.
    rtcp: Option<std::net::UdpSocket>,
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
    calls: HashMap<u64, AnchoredCall>,
    shutdown: CancellationToken,
    totals: RelayTotals,
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
        Ok(Self {
            ip,
            pool: PortPool::new(first, last)?,
            calls: HashMap::new(),
            shutdown,
            totals: RelayTotals::default(),
        })
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

    /// RTP port pairs free now.
    pub fn ports_available(&self) -> usize {
        self.pool.available()
    }

    /// Binds RTP and RTCP on `port`, `port + 1`.
    fn bind_pair(&self, port: u16) -> std::io::Result<LegSockets> {
        let rtp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port))?;
        let rtcp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1))?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        Ok(LegSockets {
            port,
            rtp: Some(rtp),
            rtcp: Some(rtcp),
        })
    }

    /// The next pool pair that binds; busy pairs (another process) are skipped and
    /// stay out of the pool.
    fn bind_next(&mut self) -> Result<LegSockets, Error> {
        for _ in 0..self.pool.available() {
            let port = self.pool.allocate()?;
            match self.bind_pair(port) {
                Ok(leg) => return Ok(leg),
                Err(e) => {
                    // Busy for now (another process, or a relay still closing): back to
                    // the end of the pool, not lost.
                    tracing::debug!(port, error = %e, "RTP port busy, trying the next pair");
                    self.pool.release(port);
                }
            }
        }
        Err(self
            .pool
            .allocate()
            .err()
            .unwrap_or(Error::PortsExhausted { first: 0, last: 0 }))
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
        self.pool.release(call.a.port);
        self.pool.release(call.b.port);
    }

    fn start_relay(&self, call: &mut AnchoredCall, mapping: &MediaMapping) -> Result<(), Error> {
        let (Some(a), Some(b)) = (call.a.rtp.take(), call.b.rtp.take()) else {
            return Ok(());
        };
        let rtcp = match (call.a.rtcp.take(), call.b.rtcp.take()) {
            (Some(a), Some(b)) => Some((
                tokio::net::UdpSocket::from_std(a)?,
                tokio::net::UdpSocket::from_std(b)?,
            )),
            _ => None,
        };
        let relay = Relay {
            leg_a: tokio::net::UdpSocket::from_std(a)?,
            leg_b: tokio::net::UdpSocket::from_std(b)?,
            a_remote: mapping.a_remote,
            b_remote: mapping.b_remote,
            clock_rate: 8000,
            transcode: mapping.transcode,
            rtcp,
        };
        call.relay = Some(relay.spawn(&self.shutdown));
        call.transcode = mapping.transcode;
        Ok(())
    }
}

impl MediaAnchor for RelayAnchor {
    fn open(&mut self, call: u64) -> Result<(SocketAddr, SocketAddr), Error> {
        let a = self.bind_next()?;
        let b = match self.bind_next() {
            Ok(b) => b,
            Err(e) => {
                self.pool.release(a.port);
                return Err(e);
            }
        };
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
        } else if let Err(e) = self.start_relay(&mut anchored, mapping) {
            tracing::warn!(call, error = %e, "could not start the RTP relay");
        }
        self.calls.insert(call, anchored);
    }

    fn restore(&mut self, call: u64, mapping: &MediaMapping) -> Result<(), Error> {
        let mut legs = Vec::with_capacity(2);
        for local in [mapping.a_local, mapping.b_local] {
            let port = local.port();
            let bound = if self.pool.reserve(port) {
                self.bind_pair(port).map_err(|e| {
                    self.pool.release(port);
                    Error::from(e)
                })
            } else {
                Err(Error::PortsExhausted {
                    first: port,
                    last: port,
                })
            };
            match bound {
                Ok(leg) => legs.push(leg),
                Err(e) => {
                    for leg in &legs {
                        self.pool.release(leg.port);
                    }
                    return Err(e);
                }
            }
        }
        let b = legs.pop();
        let a = legs.pop();
        let (Some(a), Some(b)) = (a, b) else {
            return Err(Error::Io(std::io::Error::other("two legs expected")));
        };
        let mut anchored = AnchoredCall {
            a,
            b,
            relay: None,
            transcode: None,
        };
        if let Err(e) = self.start_relay(&mut anchored, mapping) {
            self.release(anchored);
            return Err(e);
        }
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
        // Closed before any relay started: the sockets are gone at once.
        anchor.close(1);
        assert_eq!(anchor.ports_available(), before);
        assert!(anchor.is_empty());
        // A second anchor (the standby) takes the same ports over.
        let mut standby = RelayAnchor::new(ip, 47000, 47011, shutdown.clone()).expect("pool");
        standby.restore(7, &mapping).expect("restore");
        assert_eq!(standby.ports_available(), before - 2);
        // The restored ports are really bound: binding them again fails.
        assert!(std::net::UdpSocket::bind(a).is_err());
        standby.close(7);
        shutdown.cancel();
    }
}
