//! G.711 A-law and µ-law (ITU-T G.711), over `audio-codec-algorithms`.

use audio_codec_algorithms::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};

/// A-law encodes 16-bit linear samples.
pub fn encode_pcma(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode_alaw(s)).collect()
}

/// Decodes A-law octets to 16-bit linear samples.
pub fn decode_pcma(octets: &[u8]) -> Vec<i16> {
    octets.iter().map(|&o| decode_alaw(o)).collect()
}

/// µ-law encodes 16-bit linear samples.
pub fn encode_pcmu(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode_ulaw(s)).collect()
}

/// Decodes µ-law octets to 16-bit linear samples.
pub fn decode_pcmu(octets: &[u8]) -> Vec<i16> {
    octets.iter().map(|&o| decode_ulaw(o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_stays_close() {
        let samples: Vec<i16> = (-32768..=32767).step_by(97).map(|s| s as i16).collect();
        for (encode, decode) in [
            (
                encode_pcma as fn(&[i16]) -> Vec<u8>,
                decode_pcma as fn(&[u8]) -> Vec<i16>,
            ),
            (encode_pcmu, decode_pcmu),
        ] {
            let back = decode(&encode(&samples));
            for (a, b) in samples.iter().zip(&back) {
                let err = (*a as i32 - *b as i32).abs();
                // Companding error grows with amplitude: under ~3.2 % plus a step.
                assert!(err <= (a.unsigned_abs() as i32) / 30 + 140, "{a} -> {b}");
            }
        }
    }

    #[test]
    fn silence_code_points() {
        assert_eq!(encode_pcma(&[0]), vec![0xd5]);
        assert_eq!(encode_pcmu(&[0]), vec![0xff]);
    }
}
