//! Bounded ingress through a real socket: past the server-transaction limit, requests
//! get 503 with Retry-After instead of queueing; nothing is lost silently.

use std::time::Duration;

use floorwire::sip::answerer::Answerer;
use floorwire::sip::transaction::LayerConfig;
use floorwire::sip::udp::{UdpConfig, run_udp};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn over_the_limit_gets_503_retry_after() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let uas = socket.local_addr().expect("addr");
    let config = UdpConfig {
        layer: LayerConfig {
            max_server_transactions: 5,
            retry_after_secs: 7,
            ..LayerConfig::default()
        },
        ingress_queue: 1024,
        metrics: None,
    };
    let shutdown = CancellationToken::new();
    let answerer = Answerer::new(
        format!("sip:uas@{uas}"),
        "127.0.0.1:40000".parse().expect("media"),
    );
    let server = tokio::spawn(run_udp(socket, config, answerer, shutdown.clone()));
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let me = client.local_addr().expect("addr");
    for i in 0..20 {
        let options = format!(
            "OPTIONS sip:uas@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKload{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:load@{me}>;tag=l{i}\r\nTo: <sip:uas@{uas}>\r\n\
Call-ID: load-{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        client.send_to(options.as_bytes(), uas).await.expect("send");
    }
    let (mut ok, mut unavailable) = (0, 0);
    let mut buf = [0u8; 4096];
    for _ in 0..20 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("every request is answered")
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..len]);
        if text.starts_with("SIP/2.0 200") {
            ok += 1;
        } else if text.starts_with("SIP/2.0 503") {
            assert!(text.contains("Retry-After: 7"), "{text}");
            unavailable += 1;
        } else {
            panic!("unexpected answer {text}");
        }
    }
    assert_eq!((ok, unavailable), (5, 15));
    shutdown.cancel();
    let stats = server.await.expect("join").expect("server");
    assert_eq!(stats.rejected_overload, 15);
}
