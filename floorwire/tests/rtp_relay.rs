//! The relay over real loopback sockets: tones sent each way arrive at the other end
//! (proved by the Goertzel detector), counters add up, and a stray sender is refused
//! once the endpoint has latched.

use std::net::SocketAddr;
use std::time::Duration;

use floorwire::rtp::g711::Law;
use floorwire::rtp::relay::Transcode;
use floorwire::rtp::tone::{ToneGenerator, detect_tone};
use floorwire::rtp::{Relay, g711};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const PACKETS: u16 = 50;

async fn send_tone(socket: &UdpSocket, to: SocketAddr, frequency: f64, ssrc: u32) {
    send_tone_as(socket, to, frequency, ssrc, Law::ALaw).await;
}

async fn send_tone_as(socket: &UdpSocket, to: SocketAddr, frequency: f64, ssrc: u32, law: Law) {
    let mut tone = ToneGenerator::new(frequency, 0.4);
    // A packet clock (1 ms, a fast real stream) so socket buffers never overflow.
    let mut clock = tokio::time::interval(Duration::from_millis(1));
    for seq in 0..PACKETS {
        clock.tick().await;
        let samples = tone.samples(160);
        let payload = match law {
            Law::ALaw => g711::encode_pcma(&samples),
            Law::MuLaw => g711::encode_pcmu(&samples),
        };
        let packet = RtpPacketBuilder::new()
            .payload_type(law.payload_type())
            .ssrc(ssrc)
            .sequence(Seq::from(seq))
            .timestamp(seq as u32 * 160)
            .payload(&payload)
            .build()
            .expect("packet");
        socket.send_to(&packet, to).await.expect("send");
    }
}

async fn receive_audio(socket: &UdpSocket, packets: usize) -> Vec<i16> {
    receive_audio_as(socket, packets, Law::ALaw).await
}

/// Receives `packets` packets that must all carry `law`'s payload type, decoded.
async fn receive_audio_as(socket: &UdpSocket, packets: usize, law: Law) -> Vec<i16> {
    let mut samples = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..packets {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a relayed packet within 5 s")
            .expect("recv");
        let rtp = RtpReader::new(&buf[..len]).expect("RTP");
        assert_eq!(rtp.payload_type(), law.payload_type());
        samples.extend(match law {
            Law::ALaw => g711::decode_pcma(rtp.payload()),
            Law::MuLaw => g711::decode_pcmu(rtp.payload()),
        });
    }
    samples
}

#[tokio::test]
async fn tones_cross_both_ways_and_strays_are_refused() {
    let leg_a = UdpSocket::bind("127.0.0.1:0").await.expect("leg a");
    let leg_b = UdpSocket::bind("127.0.0.1:0").await.expect("leg b");
    let (leg_a_addr, leg_b_addr) = (
        leg_a.local_addr().expect("a"),
        leg_b.local_addr().expect("b"),
    );
    let turret = UdpSocket::bind("127.0.0.1:0").await.expect("turret");
    let carrier = UdpSocket::bind("127.0.0.1:0").await.expect("carrier");
    let stray = UdpSocket::bind("127.0.0.1:0").await.expect("stray");
    let shutdown = CancellationToken::new();
    // The turret's SDP address is wrong (NAT): latching must fix it. The carrier's is right.
    let relay = Relay {
        leg_a: leg_a.into(),
        leg_b: leg_b.into(),
        a_remote: Some("127.0.0.1:9".parse().expect("addr")),
        b_remote: Some(carrier.local_addr().expect("addr")),
        clock_rate: 8000,
        transcode: None,
        rtcp: None,
    }
    .spawn(&shutdown);

    // Turret → carrier, 1 kHz.
    let (_, heard_by_carrier) = tokio::join!(
        send_tone(&turret, leg_a_addr, 1000.0, 1),
        receive_audio(&carrier, PACKETS as usize)
    );
    assert!(
        detect_tone(&heard_by_carrier, 1000.0),
        "carrier hears 1 kHz"
    );
    assert!(!detect_tone(&heard_by_carrier, 1400.0));
    // Carrier → turret, 1.4 kHz, reaches the latched turret address.
    let (_, heard_by_turret) = tokio::join!(
        send_tone(&carrier, leg_b_addr, 1400.0, 2),
        receive_audio(&turret, PACKETS as usize)
    );
    assert!(
        detect_tone(&heard_by_turret, 1400.0),
        "turret hears 1.4 kHz"
    );
    assert!(!detect_tone(&heard_by_turret, 1000.0));

    // A stray source on leg A is dropped and counted, not forwarded.
    send_tone(&stray, leg_a_addr, 700.0, 3).await;
    let mut buf = [0u8; 2048];
    let leaked =
        tokio::time::timeout(Duration::from_millis(300), carrier.recv_from(&mut buf)).await;
    assert!(leaked.is_err(), "stray audio must not reach the carrier");
    let stats = relay.stats();
    assert_eq!(stats.a_to_b.packets, PACKETS as u64);
    assert_eq!(stats.a_to_b.foreign_dropped, PACKETS as u64);
    assert_eq!(stats.b_to_a.packets, PACKETS as u64);
    assert_eq!((stats.a_to_b.lost(), stats.b_to_a.lost()), (0, 0));
    assert_eq!(stats.a_to_b.bytes, PACKETS as u64 * (12 + 160));
    relay.stop();
    shutdown.cancel();
}

/// A-law on the turret side, µ-law on the carrier side: the relay converts each way
/// and the tones still arrive.
#[tokio::test]
async fn alaw_to_ulaw_transcoding_both_ways() {
    let leg_a = UdpSocket::bind("127.0.0.1:0").await.expect("leg a");
    let leg_b = UdpSocket::bind("127.0.0.1:0").await.expect("leg b");
    let (leg_a_addr, leg_b_addr) = (
        leg_a.local_addr().expect("a"),
        leg_b.local_addr().expect("b"),
    );
    let turret = UdpSocket::bind("127.0.0.1:0").await.expect("turret");
    let carrier = UdpSocket::bind("127.0.0.1:0").await.expect("carrier");
    let shutdown = CancellationToken::new();
    let relay = Relay {
        leg_a: leg_a.into(),
        leg_b: leg_b.into(),
        a_remote: None,
        b_remote: Some(carrier.local_addr().expect("addr")),
        clock_rate: 8000,
        transcode: Some(Transcode {
            a_side: Law::ALaw,
            b_side: Law::MuLaw,
        }),
        rtcp: None,
    }
    .spawn(&shutdown);
    let (_, heard) = tokio::join!(
        send_tone_as(&turret, leg_a_addr, 1000.0, 1, Law::ALaw),
        receive_audio_as(&carrier, PACKETS as usize, Law::MuLaw)
    );
    assert!(detect_tone(&heard, 1000.0) && !detect_tone(&heard, 1400.0));
    let (_, heard) = tokio::join!(
        send_tone_as(&carrier, leg_b_addr, 1400.0, 2, Law::MuLaw),
        receive_audio_as(&turret, PACKETS as usize, Law::ALaw)
    );
    assert!(detect_tone(&heard, 1400.0) && !detect_tone(&heard, 1000.0));
    relay.stop();
    shutdown.cancel();
}

/// RTCP passes between the legs' RTCP sockets, from each endpoint's IP to where the
/// other sends its RTCP from; every packet counts as activity, and silence shows in
/// `idle`.
#[tokio::test]
async fn rtcp_passes_and_silence_shows_as_idle() {
    let bind = || async { UdpSocket::bind("127.0.0.1:0").await.expect("bind") };
    let (leg_a, leg_b, rtcp_a, rtcp_b) = (bind().await, bind().await, bind().await, bind().await);
    let (rtcp_a_addr, rtcp_b_addr) = (
        rtcp_a.local_addr().expect("a"),
        rtcp_b.local_addr().expect("b"),
    );
    let (turret, carrier) = (bind().await, bind().await);
    let (turret_rtcp, carrier_rtcp) = (bind().await, bind().await);
    let shutdown = CancellationToken::new();
    let relay = Relay {
        leg_a: leg_a.into(),
        leg_b: leg_b.into(),
        a_remote: Some(turret.local_addr().expect("addr")),
        b_remote: Some(carrier.local_addr().expect("addr")),
        clock_rate: 8000,
        transcode: None,
        rtcp: Some((rtcp_a.into(), rtcp_b.into())),
    }
    .spawn(&shutdown);
    let mut buf = [0u8; 256];
    // The carrier reports first: the turret has sent no RTCP yet, so it goes to the
    // turret's RTP port + 1 (nobody here); then the turret reports and is heard, and
    // the carrier's next report reaches the port the turret sent from.
    carrier_rtcp
        .send_to(b"\x80\xc8sr-1", rtcp_b_addr)
        .await
        .expect("send");
    while relay.stats().rtcp < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    turret_rtcp
        .send_to(b"\x80\xc8sr-2", rtcp_a_addr)
        .await
        .expect("send");
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), carrier_rtcp.recv_from(&mut buf))
        .await
        .expect("the carrier hears the turret's RTCP")
        .expect("recv");
    assert_eq!((&buf[..n], from), (&b"\x80\xc8sr-2"[..], rtcp_b_addr));
    carrier_rtcp
        .send_to(b"\x80\xc8sr-3", rtcp_b_addr)
        .await
        .expect("send");
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), turret_rtcp.recv_from(&mut buf))
        .await
        .expect("the turret hears the carrier's RTCP")
        .expect("recv");
    assert_eq!((&buf[..n], from), (&b"\x80\xc8sr-3"[..], rtcp_a_addr));
    assert_eq!(relay.stats().rtcp, 3);
    assert!(relay.idle() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        relay.idle() >= Duration::from_millis(300),
        "silence is idle"
    );
    relay.stop();
    shutdown.cancel();
}
