//! A-law↔µ-law through the SBC: a TPO that offers only PCMA, a carrier trunk that
//! allows only PCMU. The SBC offers PCMU to the carrier, answers PCMA to the TPO, and
//! converts both ways: a 1 kHz tone sent in A-law crosses the carrier in µ-law and
//! comes back to the TPO in A-law, still a 1 kHz tone.

mod common;
#[path = "../../tests-common/service.rs"]
mod service;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Carrier, STANDALONE, Uac, sbc_config, write_scratch};
use floorwire::rtp::g711::{decode_pcma, encode_pcma};
use floorwire::rtp::tone::{ToneGenerator, detect_tone};
use floorwire::sdp::{self, Codec};
use floorwire::sip::msg::Method;

#[test]
fn a_law_caller_and_mu_law_trunk_hear_each_other() {
    let carrier = Carrier::start("127.0.10.3:5060", "127.0.10.3:30000");
    let config = sbc_config(
        "127.0.10.30:9200",
        "127.0.10.30:5060",
        "127.0.10.3:5060",
        "127.0.10.21:5060",
        (25000, 25999),
        None,
        STANDALONE,
    )
    .replace(
        "codecs = [\"PCMA\", \"PCMU\", \"telephone-event\"]",
        "codecs = [\"PCMU\", \"telephone-event\"]",
    );
    assert!(config.contains("codecs = [\"PCMU\""));
    let path = write_scratch("transcoding.toml", &config);
    let sbc = service::start_with_args(
        env!("CARGO_BIN_EXE_sbc-shim"),
        &["serve", "--config", &path],
        &[],
    );

    let rtp = UdpSocket::bind("127.0.10.21:0").expect("bind RTP");
    rtp.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let media = rtp.local_addr().expect("addr");
    let mut uac = Uac::bind("127.0.10.21:0");
    let target = "127.0.10.30:5060".parse().expect("addr");
    let mut call = uac
        .call_offering(target, "0142685300", "0140000000", media, &[Codec::Pcma])
        .expect("call with transcoding");
    let audio = call.answer.medias.first().expect("audio");
    let answered: Vec<Codec> = sdp::payloads(audio).into_iter().map(|p| p.codec).collect();
    assert_eq!(
        answered,
        vec![Codec::Pcma],
        "the TPO gets the law it offered"
    );
    let anchor = sdp::audio_endpoint(&call.answer).expect("anchor");

    // One second of a 1 kHz tone in A-law, 20 ms packets; collect what comes back.
    let mut tone = ToneGenerator::new(1000.0, 8000.0);
    let mut back: Vec<i16> = Vec::new();
    let mut types = std::collections::BTreeSet::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut next = start;
    for seq in 0u16..50 {
        let mut packet = vec![0x80, 8];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x5151_u32.to_be_bytes());
        packet.extend_from_slice(&encode_pcma(&tone.samples(160)));
        rtp.send_to(&packet, anchor).expect("send RTP");
        next += Duration::from_millis(20);
        while Instant::now() < next {
            if let Ok((len, _)) = rtp.recv_from(&mut buf)
                && len > 12
            {
                types.insert(buf[1] & 0x7f);
                back.extend(decode_pcma(&buf[12..len]));
            }
        }
    }
    let carrier_saw = carrier.payload_types.lock().expect("lock").clone();
    assert_eq!(
        carrier_saw.into_iter().collect::<Vec<_>>(),
        vec![0],
        "µ-law on the trunk"
    );
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        vec![8],
        "A-law back to the TPO"
    );
    assert!(
        back.len() >= 160 * 40,
        "most of the tone came back: {} samples",
        back.len()
    );
    assert!(detect_tone(&back[800..], 1000.0), "the tone survived A→µ→A");
    assert_eq!(uac.in_dialog(&mut call, Method::Bye, None), 200);
    assert!(service::terminate(sbc).success());
}
