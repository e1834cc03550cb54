//! RTP port pool over a configured range: even ports for RTP, the odd one above for
//! RTCP (RFC 3550 §11), handed out round-robin so a released port rests before reuse.

use std::collections::{HashSet, VecDeque};

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

    /// The range's first port, as configured.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The range's last port, as configured.
    pub fn last(&self) -> u16 {
        self.last
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
}
