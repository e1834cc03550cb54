//! A single relay between `IN_PORT` (leg A, on 127.0.0.1) and the sink at `OUT_PORT`,
//! for `SECONDS`; prints counters at the end. Used by `bench/rtp-relay.sh` against the
//! C forwarder of `../shared/bench/udpbench.c`.
//!
//! Usage: relay_forward IN_PORT OUT_PORT SECONDS

use std::net::SocketAddr;
use std::time::Duration;

use floorwire::rtp::Relay;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, in_port, out_port, seconds] = args.as_slice() else {
        anyhow::bail!("usage: relay_forward IN_PORT OUT_PORT SECONDS");
    };
    let leg_a = UdpSocket::bind(("127.0.0.1", in_port.parse::<u16>()?)).await?;
    let leg_b = UdpSocket::bind("127.0.0.1:0").await?;
    let sink: SocketAddr = format!("127.0.0.1:{out_port}").parse()?;
    let shutdown = CancellationToken::new();
    let handle = Relay {
        leg_a: leg_a.into(),
        leg_b: leg_b.into(),
        a_remote: None,
        b_remote: Some(sink),
        clock_rate: 8000,
        transcode: None,
        rtcp: None,
    }
    .spawn(&shutdown);
    tokio::time::sleep(Duration::from_secs_f64(seconds.parse()?)).await;
    let stats = handle.stats();
    // CPU time of this process (Linux: first field of /proc/self/schedstat, in ns).
    let cpu_ns: f64 = std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let packets = stats.a_to_b.packets.max(1) as f64;
    println!(
        "relay: relayed={} bytes={} lost_by_seq={} jitter_ms={:.2} cpu_s={:.2} us_per_pkt={:.2}",
        stats.a_to_b.packets,
        stats.a_to_b.bytes,
        stats.a_to_b.lost(),
        stats.a_to_b.jitter_ms(),
        cpu_ns / 1e9,
        cpu_ns / 1e3 / packets
    );
    shutdown.cancel();
    Ok(())
}
