//! Tone generation and a Goertzel detector, so tests can prove audio crossed a path:
//! send a tone one way, detect its frequency (and only it) at the other end.

use std::f64::consts::PI;

/// Narrowband sample rate (G.711).
pub const SAMPLE_RATE: f64 = 8000.0;

/// A sine tone generator with continuous phase across frames.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl ToneGenerator {
    /// A tone of `frequency` Hz at `amplitude` (0.0–1.0 of full scale).
    pub fn new(frequency: f64, amplitude: f64) -> Self {
        Self {
            step: 2.0 * PI * frequency / SAMPLE_RATE,
            phase: 0.0,
            amplitude: amplitude.clamp(0.0, 1.0) * i16::MAX as f64,
        }
    }

    /// Fills `frame` with the next samples.
    pub fn fill(&mut self, frame: &mut [i16]) {
        for s in frame.iter_mut() {
            *s = (self.phase.sin() * self.amplitude) as i16;
            self.phase = (self.phase + self.step) % (2.0 * PI);
        }
    }

    /// The next `n` samples.
    pub fn samples(&mut self, n: usize) -> Vec<i16> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Goertzel power of `frequency` in `samples` (squared magnitude of that DFT bin).
pub fn goertzel_power(samples: &[i16], frequency: f64) -> f64 {
    let n = samples.len() as f64;
    if n == 0.0 {
        return 0.0;
    }
    // The exact frequency, not the nearest DFT bin: with a block whose length does not
    // put `frequency` on a bin, the nearest bin can be half a bin off and hold only
    // ~40 % of a pure tone's energy.
    let coeff = 2.0 * (2.0 * PI * frequency / SAMPLE_RATE).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Share of the block's energy that sits in the `frequency` bin (0.0–1.0).
pub fn tone_ratio(samples: &[i16], frequency: f64) -> f64 {
    let energy: f64 = samples.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if energy == 0.0 {
        return 0.0;
    }
    // A pure tone centred on the bin has power N·E/2.
    (goertzel_power(samples, frequency) / (samples.len() as f64 * energy / 2.0)).min(1.0)
}

/// True when `frequency` dominates the block (≥ 60 % of its energy) and the block is
/// not silence.
pub fn detect_tone(samples: &[i16], frequency: f64) -> bool {
    let rms = (samples.iter().map(|&x| (x as f64).powi(2)).sum::<f64>()
        / samples.len().max(1) as f64)
        .sqrt();
    rms > 100.0 && tone_ratio(samples, frequency) >= 0.6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::g711;

    #[test]
    fn detects_only_the_sent_tone_through_g711() {
        let tone = ToneGenerator::new(1000.0, 0.5).samples(160 * 5);
        let decoded = g711::decode_pcma(&g711::encode_pcma(&tone));
        assert!(detect_tone(&decoded, 1000.0));
        assert!(!detect_tone(&decoded, 1400.0));
        assert!(!detect_tone(&vec![0; 800], 1000.0));
    }

    #[test]
    fn detects_a_tone_between_two_bins() {
        // 24,700 samples put 1400 Hz at bin 4322.5: the nearest bin would miss it.
        let tone = ToneGenerator::new(1400.0, 0.5).samples(24_700);
        assert!(tone_ratio(&tone, 1400.0) > 0.99);
        assert!(detect_tone(&tone, 1400.0));
        assert!(!detect_tone(&tone, 1000.0));
    }

    #[test]
    fn phase_is_continuous_across_frames() {
        let mut g = ToneGenerator::new(440.0, 0.3);
        let mut one = g.samples(80);
        one.extend(g.samples(80));
        let whole = ToneGenerator::new(440.0, 0.3).samples(160);
        assert_eq!(one, whole);
    }
}
