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

/// A driver whose core a [`StuckUser`] can hold, with its ingress queue's limit, and
/// a client socket to talk to it.
struct StuckServer {
    uas: std::net::SocketAddr,
    client: UdpSocket,
    me: std::net::SocketAddr,
    entered_rx: std::sync::mpsc::Receiver<()>,
    release_tx: std::sync::mpsc::Sender<()>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<floorwire::sip::transaction::LayerStats>>,
}

impl StuckServer {
    async fn start(ingress_queue: usize) -> Self {
        Self::start_with(ingress_queue, None).await
    }

    /// As [`start`](Self::start), with the driver's `floorwire_sip_*` metrics.
    async fn start_with(
        ingress_queue: usize,
        metrics: Option<floorwire::sip::metrics::SipMetrics>,
    ) -> Self {
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
            ingress_queue,
            metrics,
            ..UdpConfig::default()
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run_udp(socket, config, user, shutdown.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let me = client.local_addr().expect("addr");
        Self {
            uas,
            client,
            me,
            entered_rx,
            release_tx,
            shutdown,
            server,
        }
    }

    /// Returns once the core is held by the first request (a multi-thread runtime
    /// keeps running meanwhile).
    fn wait_until_held(&self) {
        tokio::task::block_in_place(|| self.entered_rx.recv_timeout(Duration::from_secs(10)))
            .expect("the core is now busy with request 0");
    }

    /// An OPTIONS from the client, numbered `i` (in its branch, tag and Call-ID).
    fn options(&self, i: usize) -> String {
        let (uas, me) = (self.uas, self.me);
        format!(
            "OPTIONS sip:uas@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKq{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:q@{me}>;tag=q{i}\r\nTo: <sip:uas@{uas}>\r\n\
Call-ID: queue-{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// Sends OPTIONS 0, waits until it holds the core, then sends OPTIONS 1 to `more`.
    async fn hold_core_then_send(&self, more: usize) {
        for i in 0..=more {
            self.client
                .send_to(self.options(i).as_bytes(), self.uas)
                .await
                .expect("send");
            if i == 0 {
                self.wait_until_held();
            }
        }
    }

    /// Lets the held core go on.
    fn release(&self) {
        self.release_tx.send(()).expect("release");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("join").expect("server");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_ingress_queue_is_answered_503_by_the_reader() {
    let stuck = StuckServer::start(1).await;
    let client = &stuck.client;
    stuck.hold_core_then_send(10).await;
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
    stuck.release();
    // Request 0 and the one that fitted in the queue are then answered normally.
    for _ in 0..2 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("answered after release")
            .expect("recv");
        assert!(buf[..len].starts_with(b"SIP/2.0 200"));
    }
    stuck.stop().await;
}

/// With the core stuck and the queue past its limit, what moves on calls already up
/// (here BYEs inside a dialog) still queues, up to four times the limit, while a new
/// request gets 503; past four times, they are refused 503 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_new_requests_but_keeps_what_calls_in_progress_need() {
    let stuck = StuckServer::start(2).await;
    let (uas, me, client) = (stuck.uas, stuck.me, &stuck.client);
    let request = |method: &str, i: usize, to_tag: &str| {
        format!(
            "{method} sip:uas@{uas} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKp{method}{i}\r\n\
Max-Forwards: 70\r\nFrom: <sip:p@{me}>;tag=p{i}\r\nTo: <sip:uas@{uas}>{to_tag}\r\n\
Call-ID: progress-{i}@test\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let send =
        |text: String| async move { client.send_to(text.as_bytes(), uas).await.expect("send") };
    send(request("OPTIONS", 0, "")).await;
    stuck.wait_until_held();
    // Eight BYEs fill the room of calls in progress (4 x 2); two new requests after
    // them find the queue past its limit; a ninth BYE finds no room at all.
    for i in 1..=8 {
        send(request("BYE", i, ";tag=up")).await;
    }
    for i in 9..=10 {
        send(request("OPTIONS", i, "")).await;
    }
    send(request("BYE", 11, ";tag=up")).await;
    let mut refused = Vec::new();
    for _ in 0..3 {
        refused.push(answer(client).await);
    }
    let cseqs: Vec<_> = refused
        .iter()
        .map(|a| {
            assert!(a.starts_with("SIP/2.0 503"), "{a}");
            a.lines()
                .find(|l| l.starts_with("CSeq:"))
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        cseqs,
        ["CSeq: 2 OPTIONS", "CSeq: 2 OPTIONS", "CSeq: 2 BYE"],
        "the new requests, then the BYE past the room, are refused: {refused:?}"
    );
    stuck.release();
    // Then request 0 and the eight queued BYEs are answered by the core.
    let mut answered = Vec::new();
    for _ in 0..9 {
        answered.push(answer(client).await);
    }
    let byes = answered
        .iter()
        .filter(|a| a.contains("CSeq: 2 BYE"))
        .count();
    assert!(
        answered.iter().all(|a| a.starts_with("SIP/2.0 200")),
        "{answered:?}"
    );
    assert_eq!(byes, 8, "{answered:?}");
    // Nothing else: each request got one answer.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            client.recv_from(&mut [0u8; 4096])
        )
        .await
        .is_err(),
        "one answer a request"
    );
    stuck.stop().await;
}

/// While the core is held, the gauge of messages waiting for it counts them, and once
/// it goes on, the delay histogram has their wait (over the 300 ms held) and the gauge
/// is back to zero: what an operator watches before 503s start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_queue_and_its_delay_are_metrics() {
    let registry = prometheus::Registry::new();
    let metrics = floorwire::sip::metrics::SipMetrics::register(&registry).expect("metrics");
    let stuck = StuckServer::start_with(100, Some(metrics)).await;
    let client = &stuck.client;
    let sample = |name: &str| -> Option<f64> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encode");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    stuck.hold_core_then_send(5).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sample("floorwire_sip_ingress_queued") != Some(5.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "five messages wait for the held core: {:?}",
            sample("floorwire_sip_ingress_queued")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stuck.release();
    for _ in 0..6 {
        assert!(answer(client).await.starts_with("SIP/2.0 200"));
    }
    assert_eq!(sample("floorwire_sip_ingress_queued"), Some(0.0));
    let messages = sample("floorwire_sip_ingress_delay_seconds_count").expect("count");
    let quick = sample("floorwire_sip_ingress_delay_seconds_bucket{le=\"0.25\"}").expect("bucket");
    assert_eq!(
        messages, 6.0,
        "request 0 and the five that came while it held the core"
    );
    assert_eq!(
        quick, 1.0,
        "only request 0 was taken within 250 ms; the five others waited for the held core"
    );
    stuck.stop().await;
}

/// The next datagram `client` receives, as text; fails after 5 s.
async fn answer(client: &UdpSocket) -> String {
    let mut buf = [0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    String::from_utf8_lossy(&buf[..len]).into_owned()
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
