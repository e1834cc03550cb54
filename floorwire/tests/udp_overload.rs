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
        ..UdpConfig::default()
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

/// A transaction user that holds the core on its first request until released, so the
/// socket reader's queue fills and the reader itself must answer.
struct StuckUser {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
    first: bool,
}

impl floorwire::sip::udp::TransactionUser for StuckUser {
    fn on_event(
        &mut self,
        now: std::time::Instant,
        event: floorwire::sip::transaction::Event,
        layer: &mut floorwire::sip::transaction::TransactionLayer,
    ) {
        if let floorwire::sip::transaction::Event::Request { id, request, .. } = event {
            if std::mem::take(&mut self.first) {
                let _ = self.entered.send(());
                let _ = self.release.recv_timeout(Duration::from_secs(10));
            }
            let ok = floorwire::sip::reply::response_to(&request, 200, None);
            let _ = layer.respond(now, id, ok);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_ingress_queue_is_answered_503_by_the_reader() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let uas = socket.local_addr().expect("addr");
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let user = StuckUser {
        entered: entered_tx,
        release: release_rx,
        first: true,
    };
    let config = UdpConfig {
        ingress_queue: 1,
        ..UdpConfig::default()
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run_udp(socket, config, user, shutdown.clone()));
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let me = client.local_addr().expect("addr");
    let options = |i: usize| {
        format!(
            "OPTIONS sip:uas@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKq{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:q@{me}>;tag=q{i}\r\nTo: <sip:uas@{uas}>\r\n\
Call-ID: queue-{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    client
        .send_to(options(0).as_bytes(), uas)
        .await
        .expect("send");
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the core is now busy with request 0");
    for i in 1..=10 {
        client
            .send_to(options(i).as_bytes(), uas)
            .await
            .expect("send");
    }
    let mut buf = [0u8; 4096];
    let mut answers = Vec::new();
    for _ in 0..9 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("the reader answers while the core is stuck")
            .expect("recv");
        answers.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("SIP/2.0 503") && a.contains("Retry-After: 5")),
        "{answers:?}"
    );
    release_tx.send(()).expect("release");
    // Request 0 and the one that fitted in the queue are then answered normally.
    for _ in 0..2 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("answered after release")
            .expect("recv");
        assert!(buf[..len].starts_with(b"SIP/2.0 200"));
    }
    shutdown.cancel();
    server.await.expect("join").expect("server");
}

/// The SIP socket gets the receive buffer asked for (as far as `net.core.rmem_max`
/// lets it): a burst waits in the kernel instead of being dropped.
#[tokio::test]
async fn the_sip_socket_gets_its_receive_buffer() {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    std_socket.set_nonblocking(true).expect("nonblocking");
    let probe = std_socket.try_clone().expect("the same socket, to look at");
    let uas = std_socket.local_addr().expect("addr");
    let before = socket2::SockRef::from(&probe)
        .recv_buffer_size()
        .expect("size");
    let asked = 1024 * 1024;
    let config = UdpConfig {
        receive_buffer: asked,
        ..UdpConfig::default()
    };
    let shutdown = CancellationToken::new();
    let answerer = Answerer::new(
        format!("sip:uas@{uas}"),
        "127.0.0.1:40000".parse().expect("media"),
    );
    let socket = UdpSocket::from_std(std_socket).expect("tokio socket");
    let server = tokio::spawn(run_udp(socket, config, answerer, shutdown.clone()));
    // Once an OPTIONS is answered the driver has set its socket up.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let me = client.local_addr().expect("addr");
    let options = format!(
        "OPTIONS sip:uas@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbuf\r\n\
Max-Forwards: 70\r\nFrom: <sip:b@{me}>;tag=b\r\nTo: <sip:uas@{uas}>\r\n\
Call-ID: buffer@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    client.send_to(options.as_bytes(), uas).await.expect("send");
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("answered")
        .expect("recv");
    let after = socket2::SockRef::from(&probe)
        .recv_buffer_size()
        .expect("size");
    // Linux grants min(asked, rmem_max) and reports twice that.
    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("rmem_max")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(after, 2 * asked.min(cap), "before: {before}");
    shutdown.cancel();
    server.await.expect("join").expect("server");
}
