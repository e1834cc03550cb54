//! RTP relay throughput (packets/s) through real loopback sockets: generator → leg A
//! → relay → leg B → sink, in windows of 64 packets of 172 bytes (G.711, 20 ms).
//! Run: `cargo bench -p floorwire --bench rtp_relay`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floorwire::rtp::Relay;
use rtp_rs::{RtpPacketBuilder, Seq};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const WINDOW: u64 = 64;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (generator, sink, leg_a_addr, shutdown) = runtime.block_on(async {
        let leg_a = UdpSocket::bind("127.0.0.1:0").await.expect("leg a");
        let leg_b = UdpSocket::bind("127.0.0.1:0").await.expect("leg b");
        let sink = UdpSocket::bind("127.0.0.1:0").await.expect("sink");
        let generator = UdpSocket::bind("127.0.0.1:0").await.expect("gen");
        let leg_a_addr = leg_a.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        Relay {
            leg_a: leg_a.into(),
            leg_b: leg_b.into(),
            a_remote: None,
            b_remote: Some(sink.local_addr().expect("addr")),
            clock_rate: 8000,
            transcode: None,
            rtcp: None,
        }
        .spawn(&shutdown);
        (generator, sink, leg_a_addr, shutdown)
    });
    let mut seq: u16 = 0;
    let mut group = c.benchmark_group("rtp");
    group.throughput(Throughput::Elements(WINDOW));
    group.bench_function("relay_window_64", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut buf = [0u8; 2048];
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..WINDOW {
                        seq = seq.wrapping_add(1);
                        let packet = RtpPacketBuilder::new()
                            .payload_type(8)
                            .ssrc(7)
                            .sequence(Seq::from(seq))
                            .timestamp(seq as u32 * 160)
                            .payload(&[0xd5; 160])
                            .build()
                            .expect("packet");
                        generator.send_to(&packet, leg_a_addr).await.expect("send");
                    }
                    let mut got = 0;
                    while got < WINDOW {
                        match tokio::time::timeout(
                            Duration::from_millis(200),
                            sink.recv_from(&mut buf),
                        )
                        .await
                        {
                            Ok(Ok(_)) => got += 1,
                            _ => break, // a lost packet ends the window; it shows as lower throughput
                        }
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, bench);
criterion_main!(benches);
