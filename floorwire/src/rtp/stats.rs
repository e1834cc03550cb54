//! Per-stream RTP counters: packets, bytes, loss and interarrival jitter, as RFC 3550
//! Appendix A.1, A.3 and A.8 compute them.

use std::time::Duration;

/// RFC 3550 A.1: a jump this far ahead is a restart, not loss (until confirmed).
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet this far behind is late (reordered); further back, a restart.
const MAX_MISORDER: u16 = 100;

/// Counters for one direction of one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    /// Every RTP packet accepted, across SSRC changes.
    pub packets: u64,
    pub bytes: u64,
    /// Packets from a source other than the latched one, dropped.
    pub foreign_dropped: u64,
    /// Packets that were not RTP (too short, wrong version), dropped.
    pub malformed: u64,
    ssrc: Option<u32>,
    /// Sequence state of the current SSRC (RFC 3550 A.1).
    max_seq: u16,
    cycles: u64,
    base_seq: u16,
    bad_seq: Option<u16>,
    /// Packets received from the current SSRC, for its loss figure.
    received: u64,
    jitter: f64,
    last_transit: Option<u32>,
    clock_rate: u32,
}

impl StreamStats {
    /// Counters for a stream whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            ..Self::default()
        }
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        self.ssrc = Some(ssrc);
        self.base_seq = seq;
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = None;
        self.received = 0;
        self.last_transit = None;
    }

    /// RFC 3550 A.1 `update_seq`: false when the packet is not counted as in-sequence
    /// (a probable restart awaiting confirmation).
    fn update_seq(&mut self, seq: u16) -> bool {
        let delta = seq.wrapping_sub(self.max_seq);
        if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += 1 << 16;
            }
            self.max_seq = seq;
        } else if delta <= u16::MAX - MAX_MISORDER {
            // A big jump: if the next packet follows it, the sender restarted.
            if self.bad_seq == Some(seq) {
                let ssrc = self.ssrc.unwrap_or_default();
                self.restart(ssrc, seq);
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        // else: duplicate or reordered within MAX_MISORDER: counted, no move.
        true
    }

    /// Accounts one packet: `arrival` is the receive time since any fixed origin.
    pub fn on_packet(&mut self, arrival: Duration, packet: &[u8]) {
        let Ok(rtp) = rtp_rs::RtpReader::new(packet) else {
            self.malformed += 1;
            return;
        };
        self.packets += 1;
        self.bytes += packet.len() as u64;
        let seq = u16::from(rtp.sequence_number());
        if self.ssrc != Some(rtp.ssrc()) {
            // New source (or SSRC change after a re-INVITE): restart sequence state.
            self.restart(rtp.ssrc(), seq);
        } else if !self.update_seq(seq) {
            return;
        }
        self.received += 1;
        // A.8, in RTP timestamp units modulo 2^32 so a timestamp wrap is harmless.
        let rate = if self.clock_rate == 0 {
            8000
        } else {
            self.clock_rate
        } as f64;
        let arrival_units = (arrival.as_secs_f64() * rate) as u64 as u32;
        let transit = arrival_units.wrapping_sub(rtp.timestamp());
        if let Some(last) = self.last_transit {
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the current SSRC's sequence numbers (A.3).
    pub fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        (self.cycles + self.max_seq as u64) - self.base_seq as u64 + 1
    }

    /// Packets lost from the current SSRC: expected minus received, never negative
    /// (duplicates).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        let rate = if self.clock_rate == 0 {
            8000
        } else {
            self.clock_rate
        } as f64;
        self.jitter / rate * 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp_rs::{RtpPacketBuilder, Seq};

    fn packet(seq: u16, ts: u32) -> Vec<u8> {
        packet_from(42, seq, ts)
    }

    fn packet_from(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(8)
            .ssrc(ssrc)
            .sequence(Seq::from(seq))
            .timestamp(ts)
            .payload(&[0xd5; 160])
            .build()
            .expect("packet")
    }

    #[test]
    fn loss_across_wrap_and_zero_jitter_when_regular() {
        let mut s = StreamStats::new(8000);
        let mut seq: u16 = 65530;
        for i in 0..20u32 {
            if i != 7 && i != 8 {
                s.on_packet(Duration::from_millis(20 * i as u64), &packet(seq, 160 * i));
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(s.packets, 18);
        assert_eq!(s.expected(), 20);
        assert_eq!(s.lost(), 2);
        assert!(s.jitter_ms() < 0.01, "{}", s.jitter_ms());
    }

    #[test]
    fn jitter_grows_with_irregular_arrival() {
        let mut s = StreamStats::new(8000);
        for i in 0..50u32 {
            let skew = if i % 2 == 0 { 0 } else { 10 };
            s.on_packet(
                Duration::from_millis(20 * i as u64 + skew),
                &packet(i as u16, 160 * i),
            );
        }
        assert!(s.jitter_ms() > 4.0, "{}", s.jitter_ms());
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn garbage_is_counted_not_parsed() {
        let mut s = StreamStats::new(8000);
        s.on_packet(Duration::ZERO, &[1, 2, 3]);
        assert_eq!((s.packets, s.malformed), (0, 1));
    }

    #[test]
    fn timestamp_wrap_does_not_spike_jitter() {
        let mut s = StreamStats::new(8000);
        let start = u32::MAX - 160 * 5;
        for i in 0..20u32 {
            s.on_packet(
                Duration::from_millis(20 * i as u64),
                &packet(i as u16, start.wrapping_add(160 * i)),
            );
        }
        assert!(s.jitter_ms() < 0.01, "{}", s.jitter_ms());
    }

    #[test]
    fn stray_jump_is_not_loss_and_a_confirmed_jump_restarts() {
        let mut s = StreamStats::new(8000);
        for i in 0..10u16 {
            s.on_packet(
                Duration::from_millis(20 * i as u64),
                &packet(i, 160 * i as u32),
            );
        }
        // One packet far ahead: held as a probable restart, not counted as 30,000 lost.
        s.on_packet(Duration::from_millis(200), &packet(30_000, 1600));
        s.on_packet(Duration::from_millis(220), &packet(10, 1760));
        assert_eq!(s.lost(), 0);
        // Two in a row far ahead: the sender restarted; count from there.
        s.on_packet(Duration::from_millis(240), &packet(40_000, 1920));
        s.on_packet(Duration::from_millis(260), &packet(40_001, 2080));
        assert_eq!((s.expected(), s.lost()), (1, 0));
    }

    #[test]
    fn loss_is_per_ssrc_after_a_change() {
        let mut s = StreamStats::new(8000);
        for i in 0..50u16 {
            s.on_packet(
                Duration::from_millis(20 * i as u64),
                &packet_from(1, i, 160 * i as u32),
            );
        }
        // New SSRC (re-INVITE): 10 sent, 2 lost.
        for i in (0..10u16).filter(|i| *i != 3 && *i != 6) {
            s.on_packet(
                Duration::from_millis(1000 + 20 * i as u64),
                &packet_from(2, 500 + i, 160 * i as u32),
            );
        }
        assert_eq!((s.expected(), s.lost()), (10, 2));
        assert_eq!(s.packets, 58);
    }
}
