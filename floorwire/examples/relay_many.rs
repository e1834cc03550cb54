//! N relays at once, as for N concurrent call legs: relay `i` takes packets on
//! 127.0.0.1:`IN_BASE + i` (its leg A) and sends them on to the sink at
//! 127.0.0.1:`OUT_BASE + i`, for `SECONDS`; prints the totals at the end. One thread,
//! as `udpbench fwd epoll` is. Used by `bench/rtp-calls.sh` against that forwarder
//! (`../shared/bench/udpbench.c`).
//!
//! Usage: relay_many IN_BASE OUT_BASE N SECONDS

use std::net::SocketAddr;
use std::time::Duration;

use floorwire::rtp::Relay;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, in_base, out_base, n, seconds] = args.as_slice() else {
        anyhow::bail!("usage: relay_many IN_BASE OUT_BASE N SECONDS");
    };
    let (in_base, out_base, n): (u16, u16, u16) = (in_base.parse()?, out_base.parse()?, n.parse()?);
    let shutdown = CancellationToken::new();
    let mut relays = Vec::with_capacity(usize::from(n));
    for i in 0..n {
        let leg_a = UdpSocket::bind(("127.0.0.1", in_base + i)).await?;
        let leg_b = UdpSocket::bind("127.0.0.1:0").await?;
        let sink: SocketAddr = format!("127.0.0.1:{}", out_base + i).parse()?;
        relays.push(
            Relay {
                leg_a: leg_a.into(),
                leg_b: leg_b.into(),
                a_remote: None,
                b_remote: Some(sink),
                clock_rate: 8000,
                transcode: None,
                rtcp: None,
            }
            .spawn(&shutdown),
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds.parse()?)).await;
    let (mut relayed, mut lost) = (0u64, 0u64);
    for relay in &relays {
        let stats = relay.stats();
        relayed += stats.a_to_b.packets;
        lost += stats.a_to_b.lost();
    }
    let cpu_ns: f64 = std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    println!(
        "relays={n} relayed={relayed} lost_by_seq={lost} cpu_s={:.2} us_per_pkt={:.2}",
        cpu_ns / 1e9,
        cpu_ns / 1e3 / relayed.max(1) as f64
    );
    shutdown.cancel();
    Ok(())
}
