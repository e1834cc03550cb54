//! The other TPOs of the active/active set: which of them answer. Each peer gets an
//! OPTIONS every `probe_interval_ms` from a socket of the prober's own; a peer whose
//! last answer is older than `dead_after_ms` is left out of the forks, so a dead peer
//! never holds a call here (a slow one is raced by the other branches anyway).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use floorwire::sip::Branch;
use floorwire::sip::ingress::{Inbound, parse_datagram};

/// `[peers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersSection {
    /// The other TPOs' SIP addresses (IP:port); this TPO's own is skipped.
    pub addresses: Vec<String>,
    pub probe_interval_ms: u64,
    pub dead_after_ms: u64,
}

/// The peers and when each last answered.
#[derive(Debug, Clone, Default)]
pub struct PeerSet {
    addresses: Arc<Vec<SocketAddr>>,
    seen: Arc<Mutex<HashMap<SocketAddr, Instant>>>,
    dead_after: Duration,
}

impl PeerSet {
    /// The peers of `section`, without `local` itself.
    pub fn from_section(section: &PeersSection, local: SocketAddr) -> crate::Result<Self> {
        let mut addresses = Vec::new();
        for (i, text) in section.addresses.iter().enumerate() {
            let address: SocketAddr = text.parse().map_err(|_| {
                crate::Error::Config(format!("peers.addresses[{i}] {text:?}: not IP:port"))
            })?;
            if address != local && !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        Ok(Self {
            addresses: Arc::new(addresses),
            seen: Arc::default(),
            dead_after: Duration::from_millis(section.dead_after_ms),
        })
    }

    pub fn is_peer(&self, address: SocketAddr) -> bool {
        self.addresses.contains(&address)
    }

    /// The peers that answered within `dead_after_ms`.
    pub fn live(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.addresses
            .iter()
            .copied()
            .filter(|a| {
                seen.get(a)
                    .is_some_and(|t| now.duration_since(*t) <= self.dead_after)
            })
            .collect()
    }

    fn answered(&self, address: SocketAddr) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address, Instant::now());
    }

    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

fn options(local: SocketAddr, peer: SocketAddr, seq: u32) -> Vec<u8> {
    format!(
        "OPTIONS sip:{peer} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={};rport\r\n\
Max-Forwards: 1\r\nFrom: <sip:peer-probe@{local}>;tag=probe\r\nTo: <sip:{peer}>\r\n\
Call-ID: probe-{local}\r\nCSeq: {seq} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        Branch::generate().as_str()
    )
    .into_bytes()
}

/// Probes every peer until `shutdown`; `changed(peer, up)` on each change of state.
pub async fn probe(
    peers: PeerSet,
    bind_ip: IpAddr,
    interval: Duration,
    shutdown: CancellationToken,
    changed: impl Fn(SocketAddr, bool) + Send + 'static,
) -> std::io::Result<()> {
    if peers.addresses.is_empty() {
        return Ok(());
    }
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
    let local = socket.local_addr()?;
    let mut ticker = tokio::time::interval(interval);
    let mut up: HashMap<SocketAddr, bool> = HashMap::new();
    let mut seq = 0u32;
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {
                seq = seq.wrapping_add(1);
                for peer in peers.addresses.iter() {
                    if let Err(e) = socket.send_to(&options(local, *peer, seq), peer).await {
                        tracing::debug!(%peer, error = %e, "peer probe not sent");
                    }
                }
                let live = peers.live();
                for peer in peers.addresses.iter() {
                    let now_up = live.contains(peer);
                    if up.insert(*peer, now_up) != Some(now_up) {
                        tracing::info!(%peer, up = now_up, "peer TPO");
                        changed(*peer, now_up);
                    }
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                if peers.is_peer(source)
                    && let Ok(Inbound::Response(r)) = parse_datagram(&buf[..n])
                    && r.status_code.code() < 300
                {
                    peers.answered(source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_list_skips_ourselves_and_names_a_bad_entry() {
        let section = PeersSection {
            addresses: vec!["127.0.1.21:5060".into(), "127.0.1.22:5060".into()],
            probe_interval_ms: 1000,
            dead_after_ms: 3000,
        };
        let local: SocketAddr = "127.0.1.21:5060".parse().unwrap();
        let peers = PeerSet::from_section(&section, local).unwrap();
        assert_eq!(peers.addresses(), &["127.0.1.22:5060".parse().unwrap()]);
        assert!(peers.live().is_empty(), "no peer is live before it answers");
        peers.answered("127.0.1.22:5060".parse().unwrap());
        assert_eq!(peers.live().len(), 1);
        let bad = PeersSection {
            addresses: vec!["tpo-2".into()],
            ..section
        };
        let e = PeerSet::from_section(&bad, local).unwrap_err().to_string();
        assert!(e.contains("peers.addresses[0]"), "{e}");
    }
}
