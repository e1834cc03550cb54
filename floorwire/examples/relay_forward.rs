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
        leg_a,
        leg_b,
        a_remote: None,
        b_remote: Some(sink),
        clock_rate: 8000,
    }
    .spawn(&shutdown);
    tokio::time::sleep(Duration::from_secs_f64(seconds.parse()?)).await;
    let stats = handle.stats();
    println!(
        "relayed {} packets ({} bytes), lost by sequence {}, jitter {:.2} ms",
        stats.a_to_b.packets,
        stats.a_to_b.bytes,
        stats.a_to_b.lost(),
        stats.a_to_b.jitter_ms()
    );
    shutdown.cancel();
    Ok(())
}
