//! G.711 A-law and µ-law (ITU-T G.711), over `audio-codec-algorithms`.

use audio_codec_algorithms::{
    convert_alaw_to_ulaw, convert_ulaw_to_alaw, decode_alaw, decode_ulaw, encode_alaw, encode_ulaw,
};

/// A G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Law {
    /// A-law, PCMA, static payload type 8.
    ALaw,
    /// µ-law, PCMU, static payload type 0.
    MuLaw,
}

impl Law {
    /// The static RTP payload type.
    pub fn payload_type(self) -> u8 {
        match self {
            Self::ALaw => 8,
            Self::MuLaw => 0,
        }
    }
}

/// Converts G.711 octets from one law to the other in place (ITU-T G.711 tables).
pub fn convert(octets: &mut [u8], from: Law, to: Law) {
    match (from, to) {
        (Law::ALaw, Law::MuLaw) => octets
            .iter_mut()
            .for_each(|o| *o = convert_alaw_to_ulaw(*o)),
        (Law::MuLaw, Law::ALaw) => octets
            .iter_mut()
            .for_each(|o| *o = convert_ulaw_to_alaw(*o)),
        _ => {}
    }
}

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
    fn law_conversion_keeps_the_signal() {
        let samples: Vec<i16> = (-8000..8000).step_by(37).map(|s| s as i16).collect();
        let mut octets = encode_pcma(&samples);
        convert(&mut octets, Law::ALaw, Law::MuLaw);
        for (a, b) in samples.iter().zip(decode_pcmu(&octets)) {
            assert!(
                (*a as i32 - b as i32).abs() <= (a.unsigned_abs() as i32) / 15 + 40,
                "{a} -> {b}"
            );
        }
    }

    #[test]
    fn silence_code_points() {
        assert_eq!(encode_pcma(&[0]), vec![0xd5]);
        assert_eq!(encode_pcmu(&[0]), vec![0xff]);
    }
}
