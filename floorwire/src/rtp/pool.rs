//! RTP port pool over a configured range: even ports for RTP, the odd one above for
//! RTCP (RFC 3550 §11), handed out round-robin so a released port rests before reuse.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

use crate::error::Error;

/// Bookkeeping of which even ports in `[first, last]` are free.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    last: u16,
    free: VecDeque<u16>,
    in_use: HashSet<u16>,
}

impl PortPool {
    /// A pool over `first..=last`; an odd `first` starts at the next even port, and the
    /// last pair must fit (its RTCP port ≤ `last`).
    pub fn new(first: u16, last: u16) -> Result<Self, Error> {
        let start = first + (first % 2);
        if start >= last {
            return Err(Error::PortsExhausted { first, last });
        }
        let free: VecDeque<u16> = (start..last).step_by(2).collect();
        Ok(Self {
            first,
            last,
            free,
            in_use: HashSet::new(),
        })
    }

    /// Pairs free now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Pairs taken now.
    pub fn taken(&self) -> usize {
        self.in_use.len()
    }

    /// Takes the next free RTP port.
    pub fn allocate(&mut self) -> Result<u16, Error> {
        let port = self.free.pop_front().ok_or(Error::PortsExhausted {
            first: self.first,
            last: self.last,
        })?;
        self.in_use.insert(port);
        Ok(port)
    }

    /// Takes a given free port (a standby taking over a call binds the ports the
    /// active used); false if it is outside the range or already taken.
    pub fn reserve(&mut self, port: u16) -> bool {
        match self.free.iter().position(|&p| p == port) {
            Some(at) => {
                self.free.remove(at);
                self.in_use.insert(port);
                true
            }
            None => false,
        }
    }

    /// Gives a port back; unknown ports are ignored.
    pub fn release(&mut self, port: u16) {
        if self.in_use.remove(&port) {
            self.free.push_back(port);
        }
    }
}

/// An RTP/RTCP socket pair bound from a shared pool; the port goes back when dropped.
#[derive(Debug)]
pub struct BoundPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pool: Arc<Mutex<PortPool>>,
    port: u16,
}

impl BoundPair {
    /// Binds the next pair on `ip` whose two ports are both free at the OS level;
    /// ports another process holds are skipped (and stay out of the pool until
    /// released by nobody: they are not returned).
    pub async fn bind(pool: &Arc<Mutex<PortPool>>, ip: IpAddr) -> Result<Self, Error> {
        let attempts = pool.lock().map(|p| p.available()).unwrap_or(0);
        for _ in 0..attempts {
            let port = pool
                .lock()
                .map_err(|_| Error::Io(std::io::Error::other("port pool poisoned")))?
                .allocate()?;
            let rtp = UdpSocket::bind(SocketAddr::new(ip, port)).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1)).await;
            if let (Ok(rtp), Ok(rtcp)) = (rtp, rtcp) {
                return Ok(Self {
                    rtp,
                    rtcp,
                    pool: pool.clone(),
                    port,
                });
            }
            tracing::debug!(port, "RTP port busy, trying the next pair");
        }
        let (first, last) = pool.lock().map(|p| (p.first, p.last)).unwrap_or((0, 0));
        Err(Error::PortsExhausted { first, last })
    }

    /// The RTP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for BoundPair {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.release(self.port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ports_round_robin() {
        let mut pool = PortPool::new(11001, 11008).expect("pool");
        assert_eq!(pool.available(), 3);
        let a = pool.allocate().expect("a");
        let b = pool.allocate().expect("b");
        assert_eq!((a, b), (11002, 11004));
        pool.release(a);
        assert_eq!(pool.allocate().expect("c"), 11006);
        assert_eq!(pool.allocate().expect("d"), 11002);
        assert!(pool.allocate().is_err());
    }

    #[tokio::test]
    async fn bind_skips_busy_ports_and_returns_on_drop() {
        let busy = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = busy.local_addr().expect("addr").port() & !1;
        let pool = Arc::new(Mutex::new(PortPool::new(port, port + 5).expect("pool")));
        // Hold both ports of the first pair so it must be skipped.
        let _hold = std::net::UdpSocket::bind(("127.0.0.1", port));
        let _hold1 = std::net::UdpSocket::bind(("127.0.0.1", port + 1));
        let pair = BoundPair::bind(&pool, "127.0.0.1".parse().expect("ip"))
            .await
            .expect("a free pair above the busy one");
        assert_ne!(pair.port(), port);
        assert_eq!(pair.port() % 2, 0);
        let before = pool.lock().expect("lock").available();
        drop(pair);
        assert_eq!(pool.lock().expect("lock").available(), before + 1);
    }
}
