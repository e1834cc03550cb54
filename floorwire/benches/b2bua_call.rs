//! CPU a call of the SIP core, sans-IO: one whole call (leg A's INVITE, leg B's 180 and
//! 200 with SDP, A's ACK, A's BYE, B's 200 to it) through the transaction layer and the
//! B2BUA, parsing and building every message, timers included. Sockets, threads and
//! the RTP relay are left out (media ports are handed out without binding), so this is
//! the TPO's SIP work alone, with none of the machine's scheduling noise: the
//! wall-clock bench (bench/tpo-calls.sh) moves by ±10 % between runs, too much to
//! see a change of a few per cent in the core.
//!
//! The clock moves 1 ms a call (1,000 calls/s of simulated time): finished
//! transactions linger their 64·T1 (32 s), so after warm-up the layer holds some
//! 100,000 of them, as a TPO does at that rate. Only the core's work is timed; the
//! simulated phones' reading and writing of messages is not.
//!
//! Before timing, the bench counts the allocations the core makes a call (heap blocks asked for, and their bytes),
//! over 1,000 calls after 2,000 of warm-up: a figure that does not move with the
//! machine's load, and that each allocation taken out of the hot path lowers.
//!
//! Run: `cargo bench -p floorwire --bench b2bua_call`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floorwire::rtp::{MediaAnchor, MediaMapping};
use floorwire::sdp::Codec;
use floorwire::sip::b2bua::{B2bua, B2buaConfig, Outbound, RouteRefusal, Router};
use floorwire::sip::msg::Request;
use floorwire::sip::transaction::{LayerConfig, TransactionLayer, Transmit};
use floorwire::sip::udp::TransactionUser;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;

/// The system allocator (the bench's figures since it was written are with it), with
/// every allocation counted.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// (allocations, bytes) so far; a reallocation counts as one allocation.
fn allocated() -> (u64, u64) {
    let stats = GLOBAL.stats();
    (
        (stats.allocations + stats.reallocations) as u64,
        (stats.bytes_allocated as i128 + stats.bytes_reallocated.max(0) as i128) as u64,
    )
}

const CALLER: &str = "127.0.0.1:5061";
const CALLEE: &str = "127.0.0.1:5062";
const CORE: &str = "127.0.0.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// Every call to the callee, as the TPO routes a dialled line to the turret with it.
struct ToCallee;

impl Router for ToCallee {
    fn route(
        &mut self,
        _now: Instant,
        _source: SocketAddr,
        _invite: &Request,
        _offered: &[Codec],
    ) -> Result<Outbound, RouteRefusal> {
        Ok(Outbound {
            destinations: vec![addr(CALLEE)],
            request_uri: format!("sip:dev-T-0002@{CALLEE}"),
            forks: Vec::new(),
            taken_notice: None,
            from: "<sip:trader01@127.0.0.1>".into(),
            to: "<sip:7101@127.0.0.1>".into(),
            headers: Vec::new(),
            codecs: None,
            transcode: None,
            label: "internal".into(),
        })
    }

    fn ended(&mut self, _label: &str) {}
}

/// Media ports handed out without sockets: the relay's cost is not the core's.
struct Unbound;

impl MediaAnchor for Unbound {
    fn open(&mut self, _call: u64) -> Result<(SocketAddr, SocketAddr), floorwire::Error> {
        Ok((addr("127.0.0.1:20000"), addr("127.0.0.1:20002")))
    }
    fn update(&mut self, _call: u64, _mapping: &MediaMapping) {}
    fn restore(&mut self, _call: u64, _mapping: &MediaMapping) -> Result<(), floorwire::Error> {
        Ok(())
    }
    fn close(&mut self, _call: u64) {}
}

const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The value of header `name` in `message` (the first line that has it).
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split("\r\n")
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("{name} missing in {message}"))
}

/// A response to `request` (its Via, From, To, Call-ID and CSeq), with a To tag.
fn response(request: &str, status: &str, to_tag: &str, contact: &str, sdp: bool) -> String {
    let mut text = format!("SIP/2.0 {status}\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        text.push_str(&format!("{name}: {}\r\n", header(request, name)));
    }
    let to = header(request, "To");
    if to.contains("tag=") {
        text.push_str(&format!("To: {to}\r\n"));
    } else {
        text.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    text.push_str(&format!("Contact: <sip:{contact}>\r\n"));
    if sdp {
        text.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        ));
    } else {
        text.push_str("Content-Length: 0\r\n\r\n");
    }
    text
}

/// The core under test, its simulated clock and the time spent in it.
struct Core {
    layer: TransactionLayer,
    b2bua: B2bua<ToCallee, Unbound>,
    now: Instant,
    spent: Duration,
    /// Allocations made in the core (timed parts only): (count, bytes).
    allocations: (u64, u64),
}

impl Core {
    fn new() -> Self {
        Self {
            layer: TransactionLayer::new(LayerConfig::default()),
            b2bua: B2bua::new(B2buaConfig::new(addr(CORE)), ToCallee, Unbound),
            now: Instant::now(),
            spent: Duration::ZERO,
            allocations: (0, 0),
        }
    }

    /// Delivers one datagram from `source` and runs the core as the UDP driver does
    /// (events, due timers); returns what it sent, as (destination, text). Only this
    /// is timed.
    fn deliver(&mut self, source: &str, text: &str) -> Vec<(SocketAddr, String)> {
        let source = addr(source);
        let before = allocated();
        let start = Instant::now();
        self.layer
            .handle_datagram(self.now, source, text.as_bytes());
        let sent = self.run_events();
        self.spent += start.elapsed();
        self.count_allocations(before);
        sent.into_iter()
            .map(|t| {
                let text = String::from_utf8(t.bytes).expect("UTF-8");
                (t.destination, text)
            })
            .collect()
    }

    /// Moves the clock on and fires what is due (timed).
    fn tick(&mut self, by: Duration) {
        self.now += by;
        let before = allocated();
        let start = Instant::now();
        if self.layer.poll_timeout().is_some_and(|at| at <= self.now) {
            self.layer.handle_timeout(self.now);
        }
        if self.b2bua.next_timer().is_some_and(|at| at <= self.now) {
            self.b2bua.on_timer(self.now, &mut self.layer);
        }
        self.run_events();
        self.spent += start.elapsed();
        self.count_allocations(before);
    }

    /// Adds what was allocated since `before` to the core's count.
    fn count_allocations(&mut self, before: (u64, u64)) {
        let after = allocated();
        self.allocations.0 += after.0 - before.0;
        self.allocations.1 += after.1 - before.1;
    }

    /// Hands the layer's events to the B2BUA, as the UDP driver does; returns what
    /// was sent meanwhile.
    fn run_events(&mut self) -> Vec<Transmit> {
        while let Some(event) = self.layer.poll_event() {
            self.b2bua.on_event(self.now, event, &mut self.layer);
        }
        std::iter::from_fn(|| self.layer.poll_transmit()).collect()
    }

    /// One whole call, `n` making its identifiers unique.
    fn call(&mut self, n: u64) {
        let invite = format!(
            "INVITE sip:7101@{CORE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{n}-1\r\n\
From: trader01 <sip:dev-T-0001@127.0.0.1:5061>;tag={n}SIPpTag001\r\nTo: <sip:7101@{CORE}>\r\n\
Call-ID: {n}-bench@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:dev-T-0001@{CALLER}\r\n\
Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            SDP.len()
        );
        let sent = self.deliver(CALLER, &invite);
        let b_invite = to(&sent, CALLEE, "INVITE");
        self.deliver(
            CALLEE,
            &response(&b_invite, "180 Ringing", "b", CALLEE, false),
        );
        let sent = self.deliver(CALLEE, &response(&b_invite, "200 OK", "b", CALLEE, true));
        to(&sent, CALLEE, "ACK");
        let ok = to(&sent, CALLER, "SIP/2.0 200");
        let tagged_to = header(&ok, "To");
        let in_dialog = |method: &str, cseq: u32, branch: u32| {
            format!(
                "{method} sip:tpo@{CORE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{n}-{branch}\r\n\
From: trader01 <sip:dev-T-0001@127.0.0.1:5061>;tag={n}SIPpTag001\r\nTo: {tagged_to}\r\n\
Call-ID: {n}-bench@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let relayed = self.deliver(CALLER, &in_dialog("ACK", 1, 2));
        assert!(
            relayed.is_empty(),
            "the 2xx's ACK ends at the core: {relayed:?}"
        );
        let sent = self.deliver(CALLER, &in_dialog("BYE", 2, 3));
        let b_bye = to(&sent, CALLEE, "BYE");
        self.deliver(CALLEE, &response(&b_bye, "200 OK", "b", CALLEE, false));
        self.tick(Duration::from_millis(1));
        self.check(n);
    }

    /// After call `n` (untimed): every call so far went up and down at first try. A
    /// message the core dropped would show as a retransmission or a timeout, a call
    /// left behind as one still active: the bench would then time other work than a
    /// call's, so it stops.
    fn check(&self, n: u64) {
        let layer = self.layer.stats();
        let calls = self.b2bua.stats();
        assert_eq!(layer.retransmissions_sent, 0, "call {n}: {layer:?}");
        assert_eq!(layer.timeouts, 0, "call {n}: {layer:?}");
        assert_eq!(calls.calls_answered, n, "call {n}: {calls:?}");
        assert_eq!(calls.calls_active, 0, "call {n}: {calls:?}");
    }
}

/// The message sent to `destination` that starts with `start`.
fn to(sent: &[(SocketAddr, String)], destination: &str, start: &str) -> String {
    sent.iter()
        .find(|(d, text)| *d == addr(destination) && text.starts_with(start))
        .map(|(_, text)| text.clone())
        .unwrap_or_else(|| panic!("no {start} to {destination} in {sent:?}"))
}

/// Allocations the core makes a call, over 1,000 calls after 2,000 of warm-up:
/// (count, bytes).
fn allocations_a_call() -> (f64, f64) {
    const WARM_UP: u64 = 2_000;
    const COUNTED: u64 = 1_000;
    let mut core = Core::new();
    for n in 1..=WARM_UP {
        core.call(n);
    }
    core.allocations = (0, 0);
    for n in WARM_UP + 1..=WARM_UP + COUNTED {
        core.call(n);
    }
    let (count, bytes) = core.allocations;
    (count as f64 / COUNTED as f64, bytes as f64 / COUNTED as f64)
}

fn bench(c: &mut Criterion) {
    let (count, bytes) = allocations_a_call();
    println!("b2bua/whole_call: {count:.1} allocations a call, {bytes:.0} bytes");
    let mut group = c.benchmark_group("b2bua");
    group.throughput(Throughput::Elements(1));
    group.bench_function("whole_call", |b| {
        let mut core = Core::new();
        let mut n = 0;
        b.iter_custom(|iterations| {
            core.spent = Duration::ZERO;
            for _ in 0..iterations {
                n += 1;
                core.call(n);
            }
            core.spent
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
