//! Per-stream RTP counters: packets, bytes, loss and interarrival jitter, as RFC 3550
//! Appendix A.1, A.3 and A.8 compute them.

use std::time::Duration;

/// Counters for one direction of one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets from a source other than the latched one, dropped.
    pub foreign_dropped: u64,
    /// Packets that were not RTP (too short, wrong version), dropped.
    pub malformed: u64,
    ssrc: Option<u32>,
    base_seq: u32,
    /// Highest sequence number seen, extended with the wrap count (RFC 3550 A.1).
    max_seq: u32,
    cycles: u32,
    jitter: f64,
    last_transit: Option<f64>,
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

    /// Accounts one packet: `arrival` is the receive time since any fixed origin.
    pub fn on_packet(&mut self, arrival: Duration, packet: &[u8]) {
        let Ok(rtp) = rtp_rs::RtpReader::new(packet) else {
            self.malformed += 1;
            return;
        };
        self.packets += 1;
        self.bytes += packet.len() as u64;
        let seq = u16::from(rtp.sequence_number()) as u32;
        if self.ssrc != Some(rtp.ssrc()) {
            // New source (or SSRC change after a re-INVITE): restart sequence state.
            self.ssrc = Some(rtp.ssrc());
            self.base_seq = seq;
            self.max_seq = seq;
            self.cycles = 0;
            self.last_transit = None;
        } else {
            let max_low = self.max_seq & 0xffff;
            let delta = seq.wrapping_sub(max_low) & 0xffff;
            if delta < 0x8000 && delta != 0 {
                if seq < max_low {
                    self.cycles += 1 << 16;
                }
                self.max_seq = self.cycles | seq;
            }
        }
        let rate = if self.clock_rate == 0 {
            8000
        } else {
            self.clock_rate
        } as f64;
        let transit = arrival.as_secs_f64() * rate - rtp.timestamp() as f64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        (self.max_seq.wrapping_sub(self.base_seq) as u64) + 1
    }

    /// Packets lost: expected minus received, never negative (duplicates).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
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
        RtpPacketBuilder::new()
            .payload_type(8)
            .ssrc(42)
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
}
