//! SIPp's built-in `uac` scenario (Debian `sip-tester`) against a small UAS built on
//! the library: 1,000 calls, 0 failures. A real peer over real UDP sockets.

mod common;

use std::net::SocketAddr;

use floorwire::sip::answerer::{Answerer, AnswererStats};
use floorwire::sip::udp::{UdpConfig, run_udp};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_1000_calls_no_failures() {
    if !common::sipp_available() {
        return;
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let uas: SocketAddr = socket.local_addr().expect("addr");
    let (stats_tx, stats_rx) = tokio::sync::watch::channel(AnswererStats::default());
    let answerer = Answerer::new(
        format!("sip:uas@{uas}"),
        "127.0.0.1:40000".parse().expect("media"),
    )
    .with_stats(stats_tx);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run_udp(
        socket,
        UdpConfig::default(),
        answerer,
        shutdown.clone(),
    ));

    let dir = common::scratch("sipp-uac");
    let args: Vec<String> = [
        uas.to_string().as_str(),
        "-sn",
        "uac",
        "-i",
        "127.0.0.1",
        "-p",
        &common::free_udp_port().to_string(),
        "-m",
        "1000",
        "-r",
        "200",
        "-l",
        "200",
        "-nostdin",
        "-buff_size",
        "4194304",
        "-timeout",
        "60s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run_dir = dir.clone();
    let output = tokio::task::spawn_blocking(move || common::run_sipp(&args, &run_dir))
        .await
        .expect("join");
    shutdown.cancel();
    let layer_stats = server.await.expect("join").expect("server");
    let stats = *stats_rx.borrow();
    assert!(output.status.success(), "{}", common::tail(&output));
    assert_eq!(stats.calls_answered, 1000, "{stats:?} {layer_stats:?}");
    assert_eq!(stats.calls_ended, 1000, "{stats:?} {layer_stats:?}");
    assert_eq!(layer_stats.rejected_malformed, 0);
    let _ = std::fs::remove_dir_all(dir);
}
