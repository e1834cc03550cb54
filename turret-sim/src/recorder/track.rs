//! One recorded stream's audio, placed in time: each RTP packet's samples go where its
//! timestamp says, counted from where the stream's first packet arrived in the
//! recording, so the two parties' tracks line up in the stereo file. Gaps stay
//! silent. No I/O.

/// 8 kHz: G.711's clock, and the recording's sample rate.
pub const RATE: u32 = 8000;

/// Most samples a track keeps (one hour); later audio is counted, not kept.
pub const MAX_SAMPLES: usize = 3600 * RATE as usize;

/// One stream's samples.
#[derive(Debug, Default)]
pub struct Track {
    /// (RTP timestamp, sample position) of the first packet.
    origin: Option<(u32, u64)>,
    samples: Vec<i16>,
    /// Packets taken, and samples dropped past [`MAX_SAMPLES`] or too far back.
    pub packets: u64,
    pub dropped: u64,
}

impl Track {
    /// Places `samples` of the packet stamped `timestamp`, which arrived `arrival`
    /// samples after the recording began.
    pub fn put(&mut self, arrival: u64, timestamp: u32, samples: &[i16]) {
        self.packets += 1;
        let (ts0, pos0) = *self.origin.get_or_insert((timestamp, arrival));
        // Signed distance from the first packet, modulo 2^32 (timestamps wrap).
        let delta = i64::from(timestamp.wrapping_sub(ts0) as i32);
        let Some(start) = u64::try_from(pos0 as i64 + delta).ok() else {
            self.dropped += samples.len() as u64;
            return;
        };
        let Ok(start) = usize::try_from(start) else {
            self.dropped += samples.len() as u64;
            return;
        };
        let end = (start + samples.len()).min(MAX_SAMPLES);
        if start >= end {
            self.dropped += samples.len() as u64;
            return;
        }
        if self.samples.len() < end {
            self.samples.resize(end, 0);
        }
        let kept = end - start;
        self.samples[start..end].copy_from_slice(&samples[..kept]);
        self.dropped += (samples.len() - kept) as u64;
    }

    /// Samples so far (silence where nothing came).
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

/// Two tracks interleaved as stereo frames (left, right), as long as the longer.
pub fn interleave(left: &[i16], right: &[i16]) -> Vec<i16> {
    let frames = left.len().max(right.len());
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        out.push(left.get(i).copied().unwrap_or(0));
        out.push(right.get(i).copied().unwrap_or(0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_land_where_their_timestamps_say() {
        let mut t = Track::default();
        t.put(800, 1000, &[1; 160]);
        // The next packet is lost; the third comes late but in its place.
        t.put(1200, 1320, &[3; 160]);
        t.put(1210, 1160, &[2; 160]);
        assert_eq!(t.samples().len(), 800 + 480);
        assert!(t.samples()[..800].iter().all(|s| *s == 0), "silence before");
        assert_eq!(t.samples()[800], 1);
        assert_eq!(t.samples()[960], 2);
        assert_eq!(t.samples()[1120], 3);
        assert_eq!(t.packets, 3);
    }

    #[test]
    fn timestamps_wrap_and_nothing_goes_before_the_start() {
        let mut t = Track::default();
        t.put(0, u32::MAX - 79, &[1; 160]);
        t.put(160, 80, &[2; 160]);
        assert_eq!(t.samples().len(), 320);
        assert_eq!(t.samples()[160], 2);
        t.put(0, u32::MAX - 1000, &[9; 160]);
        assert_eq!(t.dropped, 160, "a packet from before the start is dropped");
    }

    #[test]
    fn interleaves_tracks_of_different_lengths() {
        assert_eq!(interleave(&[1, 2], &[5]), vec![1, 5, 2, 0]);
    }
}
