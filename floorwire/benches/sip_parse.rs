//! SIP parse + validate + serialise throughput (messages/s) for a SIPp-style INVITE.
//! Run: `cargo bench -p floorwire --bench sip_parse`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floorwire::sip::ingress::{Inbound, parse_datagram};

const INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3412-1-0\r\n\
From: sipp <sip:sipp@127.0.0.1:5070>;tag=3412SIPpTag001\r\n\
To: service <sip:service@127.0.0.1:5060>\r\n\
Call-ID: 1-3412@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.0.1:5070\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length:   129\r\n\
\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

fn bench(c: &mut Criterion) {
    let bytes = INVITE.as_bytes();
    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_validate_serialise_invite", |b| {
        b.iter(|| match parse_datagram(std::hint::black_box(bytes)) {
            Ok(Inbound::Request(r)) => r.to_bytes().len(),
            _ => 0,
        })
    });
    group.bench_function("rsipstack_parse_only", |b| {
        b.iter(|| floorwire::sip::msg::SipMessage::try_from(std::hint::black_box(bytes)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
