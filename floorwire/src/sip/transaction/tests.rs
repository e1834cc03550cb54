//! Deterministic tests of the transaction layer on a virtual clock: no sockets, no
//! sleeping; time is an `Instant` we move by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsipstack::sip::{Method, Request};

use super::*;
use crate::sip::dialog::Dialog;
use crate::sip::ingress::{Inbound, parse_datagram};

const UAC: &str = "127.0.0.1:5070";
const UAS: &str = "127.0.0.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn request(method: &str, branch: &str, cseq: u32) -> Request {
    let text = format!(
        "{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@127.0.0.1>;tag=alice1\r\n\
To: <sip:bob@127.0.0.1>\r\n\
Call-ID: call-{branch}\r\n\
CSeq: {cseq} {method}\r\n\
Contact: <sip:alice@127.0.0.1:5070>\r\n\
Content-Length: 0\r\n\r\n"
    );
    match parse_datagram(text.as_bytes()) {
        Ok(Inbound::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn drain(layer: &mut TransactionLayer) -> (Vec<Transmit>, Vec<Event>) {
    let mut t = Vec::new();
    while let Some(x) = layer.poll_transmit() {
        t.push(x);
    }
    let mut e = Vec::new();
    while let Some(x) = layer.poll_event() {
        e.push(x);
    }
    (t, e)
}

/// Delivers `request` from the UAC at `now`; returns what the layer sent and the id of
/// the server transaction it opened (the first event must be that request).
fn deliver(
    layer: &mut TransactionLayer,
    now: Instant,
    request: &Request,
) -> (Vec<Transmit>, TransactionId) {
    layer.handle_datagram(now, addr(UAC), &request.to_bytes());
    let (t, e) = drain(layer);
    let Some(Event::Request { id, .. }) = e.into_iter().next() else {
        panic!("no request event for {}", request.method);
    };
    (t, id)
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    match parse_datagram(bytes) {
        Ok(Inbound::Response(r)) => Some(r.status_code.code()),
        _ => None,
    }
}

fn method_of(bytes: &[u8]) -> Option<Method> {
    match parse_datagram(bytes) {
        Ok(Inbound::Request(r)) => Some(r.method),
        _ => None,
    }
}

/// Advances the clock in 10 ms steps to `until`, firing timers; returns the instants
/// at which something was transmitted (relative to `t0`) and all events.
fn run_clock(
    layer: &mut TransactionLayer,
    t0: Instant,
    until: Duration,
) -> (Vec<Duration>, Vec<Event>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let mut now = t0;
    while now <= t0 + until {
        if layer.poll_timeout().is_some_and(|d| d <= now) {
            layer.handle_timeout(now);
        }
        let (t, e) = drain(layer);
        sent.extend(t.iter().map(|_| now - t0));
        events.extend(e);
        now += Duration::from_millis(10);
    }
    (sent, events)
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|&m| Duration::from_millis(m)).collect()
}

#[test]
fn invite_client_timer_a_doubles_until_timer_b() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let id = layer
        .send_request(t0, addr(UAS), request("INVITE", "z9hG4bKa1", 1))
        .expect("send");
    let (sent, events) = run_clock(&mut layer, t0, Duration::from_secs(40));
    // Initial send, then Timer A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; Timer B at 32 s.
    assert_eq!(sent, ms(&[0, 500, 1500, 3500, 7500, 15500, 31500]));
    assert!(matches!(events.as_slice(), [Event::Timeout { id: t }] if *t == id));
    assert!(layer.is_empty());
}

#[test]
fn non_invite_client_timer_e_caps_at_t2() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    layer
        .send_request(t0, addr(UAS), request("OPTIONS", "z9hG4bKo1", 1))
        .expect("send");
    let (sent, events) = run_clock(&mut layer, t0, Duration::from_secs(33));
    assert_eq!(
        sent,
        ms(&[
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ])
    );
    assert_eq!(events.len(), 1, "one Timeout (Timer F at 32 s)");
}

#[test]
fn non_invite_provisional_moves_retransmits_to_t2() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let req = request("OPTIONS", "z9hG4bKo2", 1);
    layer
        .send_request(t0, addr(UAS), req.clone())
        .expect("send");
    drain(&mut layer);
    let trying = crate::sip::reply::response_to(&req, 100, None);
    layer.handle_datagram(
        t0 + Duration::from_millis(100),
        addr(UAS),
        &trying.to_bytes(),
    );
    let (sent, events) = run_clock(
        &mut layer,
        t0 + Duration::from_millis(100),
        Duration::from_millis(9000),
    );
    assert_eq!(events.len(), 1, "the 100 reached the TU: {events:?}");
    // Timer E was already due at 0.5 s; from Proceeding on it fires every T2.
    assert_eq!(sent, ms(&[400, 4400, 8400]));
}

#[test]
fn server_invite_final_retransmitted_until_ack_then_timer_i() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKs1", 1);
    let (t, id) = deliver(&mut layer, t0, &invite);
    assert_eq!(status_of(&t[0].bytes), Some(100));
    let busy = crate::sip::reply::response_to(&invite, 486, Some(&crate::sip::Tag::new("b")));
    layer.respond(t0, id, busy).expect("respond");
    let (sent, _) = run_clock(&mut layer, t0, Duration::from_millis(4000));
    assert_eq!(sent, ms(&[0, 500, 1500, 3500]));
    // Retransmitted INVITE: the 486 again, no new event.
    layer.handle_datagram(
        t0 + Duration::from_millis(4000),
        addr(UAC),
        &invite.to_bytes(),
    );
    let (t, e) = drain(&mut layer);
    assert_eq!((t.len(), e.len()), (1, 0));
    assert_eq!(status_of(&t[0].bytes), Some(486));
    // The ACK (same branch) confirms; Timer I (T4) ends it.
    let ack = build_ack(
        &invite,
        &match parse_datagram(&t[0].bytes) {
            Ok(Inbound::Response(r)) => r,
            other => panic!("{other:?}"),
        },
    );
    let at = t0 + Duration::from_millis(4100);
    layer.handle_datagram(at, addr(UAC), &ack.to_bytes());
    assert_eq!(layer.server_state(id), Some(ServerState::Confirmed));
    let (sent, events) = run_clock(&mut layer, at, Duration::from_secs(6));
    assert!(sent.is_empty() && events.is_empty());
    assert!(layer.is_empty());
}

#[test]
fn server_invite_without_ack_times_out_with_timer_h() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKs2", 1);
    let (_, id) = deliver(&mut layer, t0, &invite);
    layer
        .respond(t0, id, crate::sip::reply::response_to(&invite, 404, None))
        .expect("respond");
    let (sent, events) = run_clock(&mut layer, t0, Duration::from_secs(33));
    // G: 0.5, 1.5, 3.5, 7.5, then every T2 until H at 32 s.
    assert_eq!(
        sent,
        ms(&[
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ])
    );
    assert!(matches!(events.as_slice(), [Event::Timeout { .. }]));
}

#[test]
fn uas_2xx_retransmitted_until_its_ack() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKs3", 7);
    let (_, id) = deliver(&mut layer, t0, &invite);
    let ok = crate::sip::reply::with_header(
        crate::sip::reply::response_to(&invite, 200, Some(&crate::sip::Tag::new("bob1"))),
        rsipstack::sip::Header::Contact("<sip:bob@127.0.0.1:5060>".into()),
    );
    layer.respond(t0, id, ok.clone()).expect("respond");
    assert_eq!(layer.server_state(id), Some(ServerState::Accepted));
    let (sent, _) = run_clock(&mut layer, t0, Duration::from_millis(2000));
    assert_eq!(sent, ms(&[0, 500, 1500]));
    // A copy of the INVITE before the ACK: the 2xx again.
    let at = t0 + Duration::from_millis(2000);
    layer.handle_datagram(at, addr(UAC), &invite.to_bytes());
    let (t, e) = drain(&mut layer);
    let statuses: Vec<_> = t.iter().map(|t| status_of(&t.bytes)).collect();
    assert_eq!((statuses, e.len()), (vec![Some(200)], 0));
    // ACK for the 2xx: new branch, same Call-ID and CSeq number.
    let mut dialog = Dialog::from_uac(&invite, &ok).expect("dialog");
    let ack = dialog.ack(7, "127.0.0.1:5070").expect("ack");
    layer.handle_datagram(at, addr(UAC), &ack.to_bytes());
    let (_, e) = drain(&mut layer);
    assert!(matches!(e.as_slice(), [Event::Ack { answered: true, .. }]));
    // After it, a copy is absorbed without an answer (RFC 6026 §8.7): the 2xx is
    // not kept for Timer L's 32 s.
    layer.handle_datagram(at, addr(UAC), &invite.to_bytes());
    let (t, e) = drain(&mut layer);
    assert_eq!((t.len(), e.len()), (0, 0), "absorbed: {t:?}");
    let (sent, events) = run_clock(&mut layer, at, Duration::from_secs(40));
    assert!(sent.is_empty(), "no 2xx after the ACK: {sent:?}");
    assert!(events.is_empty(), "no AckTimeout: {events:?}");
    assert!(layer.is_empty(), "Timer L ended the transaction");
}

#[test]
fn retransmitted_request_is_absorbed() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let options = request("OPTIONS", "z9hG4bKr1", 1);
    layer.handle_datagram(t0, addr(UAC), &options.to_bytes());
    layer.handle_datagram(t0, addr(UAC), &options.to_bytes());
    let (t, e) = drain(&mut layer);
    assert_eq!(
        (t.len(), e.len()),
        (0, 1),
        "Trying: absorbed silently, one event"
    );
    let Some(Event::Request { id, .. }) = e.into_iter().next() else {
        panic!("no request");
    };
    layer
        .respond(t0, id, crate::sip::reply::response_to(&options, 200, None))
        .expect("respond");
    layer.handle_datagram(t0, addr(UAC), &options.to_bytes());
    let (t, e) = drain(&mut layer);
    assert_eq!((t.len(), e.len()), (2, 0), "the 200, then the 200 again");
    assert_eq!(layer.stats().retransmissions_absorbed, 2);
}

#[test]
fn overload_answers_503_with_retry_after() {
    let config = LayerConfig {
        max_server_transactions: 2,
        ..LayerConfig::default()
    };
    let mut layer = TransactionLayer::new(config);
    let t0 = Instant::now();
    for i in 0..3 {
        layer.handle_datagram(
            t0,
            addr(UAC),
            &request("OPTIONS", &format!("z9hG4bKov{i}"), 1).to_bytes(),
        );
    }
    let (t, e) = drain(&mut layer);
    assert_eq!(e.len(), 2);
    assert_eq!(t.len(), 1);
    let text = String::from_utf8_lossy(&t[0].bytes).into_owned();
    assert!(text.starts_with("SIP/2.0 503"), "{text}");
    assert!(text.contains("Retry-After: 5"), "{text}");
    assert_eq!(layer.stats().rejected_overload, 1);
}

/// The limit counts requests still waiting for the TU's final response: one answered
/// (lingering 32 s for Timer J) leaves room for the next, so a sustained rate is not
/// capped at limit / 64 s.
#[test]
fn answered_transactions_lingering_do_not_count_towards_overload() {
    let config = LayerConfig {
        max_server_transactions: 1,
        ..LayerConfig::default()
    };
    let mut layer = TransactionLayer::new(config);
    let t0 = Instant::now();
    for i in 0..3 {
        let sent = answer_options(&mut layer, t0, &format!("z9hG4bKln{i}"));
        assert!(sent.is_empty(), "no 503 for request {i}");
    }
    assert_eq!(layer.len(), 3, "all three linger for Timer J");
    // One waiting for the TU fills the limit: the next is shed.
    deliver(&mut layer, t0, &request("OPTIONS", "z9hG4bKln3", 1));
    assert_shed(&mut layer, t0, "z9hG4bKln4");
    // Timer J ends the lingering ones; the unanswered one stays.
    let (_, _) = run_clock(&mut layer, t0, Duration::from_secs(33));
    assert_eq!(layer.len(), 1);
}

/// Lingering transactions are bounded too, by the total: a flood of requests
/// answered at once cannot grow the table without limit.
#[test]
fn lingering_transactions_are_bounded_by_the_total() {
    let config = LayerConfig {
        max_transactions: 2,
        ..LayerConfig::default()
    };
    let mut layer = TransactionLayer::new(config);
    let t0 = Instant::now();
    for i in 0..2 {
        answer_options(&mut layer, t0, &format!("z9hG4bKtot{i}"));
    }
    assert_shed(&mut layer, t0, "z9hG4bKtot2");
    assert_eq!(layer.len(), 2);
}

/// A burst's room is given back once it is over: the timer that ends the last
/// lingering transaction finds the tables empty and shrinks them, although no timer
/// comes after it to look again.
#[test]
fn the_last_transaction_to_end_gives_the_tables_room_back() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    for i in 0..5_000 {
        answer_options(&mut layer, t0, &format!("z9hG4bKburst{i}"));
    }
    assert!(layer.transactions.capacity() > crate::util::SHRINK_ABOVE);
    // Every Timer J fires in this one call.
    layer.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(layer.len(), 0);
    assert_eq!(layer.poll_timeout(), None, "no timer left to look again");
    for (table, capacity) in [
        ("transactions", layer.transactions.capacity()),
        ("by_key", layer.by_key.capacity()),
    ] {
        assert!(
            capacity <= crate::util::SHRINK_ABOVE,
            "{table} kept room for {capacity}"
        );
    }
}

/// Delivers an OPTIONS with `branch` and answers it 200 (its transaction lingers for
/// Timer J); returns what the layer sent on delivery.
fn answer_options(layer: &mut TransactionLayer, now: Instant, branch: &str) -> Vec<Transmit> {
    let options = request("OPTIONS", branch, 1);
    let (sent, id) = deliver(layer, now, &options);
    let ok = crate::sip::reply::response_to(&options, 200, Some(&crate::sip::Tag::new("u")));
    layer.respond(now, id, ok).expect("200");
    drain(layer);
    sent
}

/// An OPTIONS with `branch` is answered 503 by the layer and never reaches the TU.
fn assert_shed(layer: &mut TransactionLayer, now: Instant, branch: &str) {
    let options = request("OPTIONS", branch, 1);
    layer.handle_datagram(now, addr(UAC), &options.to_bytes());
    let (t, e) = drain(layer);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(status_of(&t[0].bytes), Some(503));
}

/// Two layers joined by a virtual network that delivers everything in flight.
struct Pair {
    uac: TransactionLayer,
    uas: TransactionLayer,
    now: Instant,
    uac_events: Vec<Event>,
    uas_events: Vec<Event>,
}

impl Pair {
    fn new() -> Self {
        Self {
            uac: TransactionLayer::new(LayerConfig::default()),
            uas: TransactionLayer::new(LayerConfig::default()),
            now: Instant::now(),
            uac_events: Vec::new(),
            uas_events: Vec::new(),
        }
    }

    /// Delivers until quiet; `keep` may drop messages (returns false to lose one).
    fn drive(&mut self, mut keep: impl FnMut(&Transmit) -> bool) {
        loop {
            let mut moved = false;
            while let Some(t) = self.uac.poll_transmit() {
                moved = true;
                if keep(&t) {
                    self.uas.handle_datagram(self.now, addr(UAC), &t.bytes);
                }
            }
            while let Some(t) = self.uas.poll_transmit() {
                moved = true;
                if keep(&t) {
                    self.uac.handle_datagram(self.now, addr(UAS), &t.bytes);
                }
            }
            while let Some(e) = self.uac.poll_event() {
                self.uac_events.push(e);
            }
            while let Some(e) = self.uas.poll_event() {
                self.uas_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn uas_request(&mut self) -> (TransactionId, Request) {
        let i = self
            .uas_events
            .iter()
            .position(|e| matches!(e, Event::Request { .. }))
            .expect("a request at the UAS");
        match self.uas_events.remove(i) {
            Event::Request { id, request, .. } => (id, request),
            _ => unreachable!(),
        }
    }

    fn uac_statuses(&self) -> Vec<u16> {
        self.uac_events
            .iter()
            .filter_map(|e| match e {
                Event::Response { response, .. } => Some(response.status_code.code()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn whole_call_with_a_lost_invite() {
    let mut p = Pair::new();
    let invite = request("INVITE", "z9hG4bKcall1", 1);
    p.uac.send_request(p.now, addr(UAS), invite).expect("send");
    // The first INVITE is lost; Timer A brings it back at 500 ms.
    p.drive(|_| false);
    p.now += Duration::from_millis(500);
    p.uac.handle_timeout(p.now);
    p.drive(|_| true);
    let (id, invite) = p.uas_request();
    let tag = crate::sip::Tag::new("bob");
    p.uas
        .respond(
            p.now,
            id,
            crate::sip::reply::response_to(&invite, 180, Some(&tag)),
        )
        .expect("180");
    let mut ok = crate::sip::reply::response_to(&invite, 200, Some(&tag));
    ok = crate::sip::reply::with_header(
        ok,
        rsipstack::sip::Header::Contact("<sip:bob@127.0.0.1:5060>".into()),
    );
    p.uas.respond(p.now, id, ok).expect("200");
    p.drive(|_| true);
    assert_eq!(p.uac_statuses(), vec![100, 180, 200]);
    // The TU ACKs the 2xx outside the transaction, then hangs up.
    let ok = match p.uac_events.last() {
        Some(Event::Response { response, .. }) => response.clone(),
        other => panic!("{other:?}"),
    };
    let mut dialog = Dialog::from_uac(&invite, &ok).expect("dialog");
    let ack = dialog.ack(1, "127.0.0.1:5070").expect("ack");
    p.uac
        .send_stateless(addr(UAS), ack.to_bytes())
        .expect("ack");
    let bye = dialog
        .request(Method::Bye, "127.0.0.1:5070", None)
        .expect("bye");
    p.uac.send_request(p.now, addr(UAS), bye).expect("bye");
    p.drive(|_| true);
    assert!(
        p.uas_events
            .iter()
            .any(|e| matches!(e, Event::Ack { answered: true, .. }))
    );
    let (bye_id, bye) = p.uas_request();
    assert_eq!(bye.method, Method::Bye);
    p.uas
        .respond(
            p.now,
            bye_id,
            crate::sip::reply::response_to(&bye, 200, None),
        )
        .expect("200");
    p.drive(|_| true);
    assert_eq!(p.uac_statuses(), vec![100, 180, 200, 200]);
}

#[test]
fn cancel_before_answer_gets_487_and_automatic_ack() {
    let mut p = Pair::new();
    let invite_id = p
        .uac
        .send_request(p.now, addr(UAS), request("INVITE", "z9hG4bKc1", 1))
        .expect("send");
    p.drive(|_| true);
    let (uas_id, invite) = p.uas_request();
    p.uas
        .respond(
            p.now,
            uas_id,
            crate::sip::reply::response_to(&invite, 180, Some(&crate::sip::Tag::new("b"))),
        )
        .expect("180");
    p.drive(|_| true);
    assert!(matches!(
        p.uac.cancel(p.now, invite_id),
        CancelOutcome::Sent(_)
    ));
    p.drive(|_| true);
    assert!(
        p.uas_events
            .iter()
            .any(|e| matches!(e, Event::Cancelled { invite } if *invite == uas_id))
    );
    let statuses = p.uac_statuses();
    assert!(
        statuses.contains(&487) && statuses.contains(&200),
        "{statuses:?}"
    );
    // The layer ACKed the 487 itself: the UAS transaction is Confirmed.
    assert_eq!(p.uas.server_state(uas_id), Some(ServerState::Confirmed));
    assert_eq!(p.uac.client_state(invite_id), Some(ClientState::Completed));
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut p = Pair::new();
    let config = LayerConfig {
        auto_trying: false,
        ..LayerConfig::default()
    };
    p.uas = TransactionLayer::new(config);
    let invite_id = p
        .uac
        .send_request(p.now, addr(UAS), request("INVITE", "z9hG4bKc2", 1))
        .expect("send");
    assert_eq!(p.uac.cancel(p.now, invite_id), CancelOutcome::Pending);
    p.drive(|_| true);
    let (uas_id, invite) = p.uas_request();
    assert!(p.uas_events.is_empty(), "no CANCEL before a provisional");
    p.uas
        .respond(
            p.now,
            uas_id,
            crate::sip::reply::response_to(&invite, 180, Some(&crate::sip::Tag::new("b"))),
        )
        .expect("180");
    p.drive(|_| true);
    assert!(
        p.uas_events
            .iter()
            .any(|e| matches!(e, Event::Cancelled { .. }))
    );
    assert!(p.uac_statuses().contains(&487));
}

/// The race of §9.1 / RFC 3261 §15: the UAS answers 200 while the CANCEL is in
/// flight. The CANCEL gets 200 but changes nothing; the UAC gets the 2xx, must ACK it
/// and then BYE.
#[test]
fn cancel_crossing_200_leaves_the_call_up() {
    let mut p = Pair::new();
    let invite_id = p
        .uac
        .send_request(p.now, addr(UAS), request("INVITE", "z9hG4bKrace", 1))
        .expect("send");
    p.drive(|_| true);
    let (uas_id, invite) = p.uas_request();
    let tag = crate::sip::Tag::new("b");
    p.uas
        .respond(
            p.now,
            uas_id,
            crate::sip::reply::response_to(&invite, 180, Some(&tag)),
        )
        .expect("180");
    p.drive(|_| true);
    // Both sides act before either hears the other: hold the 200 back.
    let mut ok = crate::sip::reply::response_to(&invite, 200, Some(&tag));
    ok = crate::sip::reply::with_header(
        ok,
        rsipstack::sip::Header::Contact("<sip:bob@127.0.0.1:5060>".into()),
    );
    p.uas.respond(p.now, uas_id, ok).expect("200");
    let held_200: Vec<Transmit> = std::iter::from_fn(|| p.uas.poll_transmit()).collect();
    assert!(matches!(
        p.uac.cancel(p.now, invite_id),
        CancelOutcome::Sent(_)
    ));
    // The CANCEL reaches the UAS first.
    p.drive(|t| method_of(&t.bytes) == Some(Method::Cancel) || status_of(&t.bytes) == Some(200));
    assert!(
        !p.uas_events
            .iter()
            .any(|e| matches!(e, Event::Cancelled { .. }))
    );
    assert_eq!(p.uas.server_state(uas_id), Some(ServerState::Accepted));
    for t in held_200 {
        p.uac.handle_datagram(p.now, addr(UAS), &t.bytes);
    }
    p.drive(|_| true);
    let statuses = p.uac_statuses();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        2,
        "200 for CANCEL and for INVITE: {statuses:?}"
    );
    assert!(!statuses.contains(&487));
    assert_eq!(p.uac.client_state(invite_id), Some(ClientState::Accepted));
}

#[test]
fn cancel_for_unknown_invite_gets_481() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let cancel = build_cancel(&request("INVITE", "z9hG4bKnone", 1));
    layer.handle_datagram(t0, addr(UAC), &cancel.to_bytes());
    let (t, e) = drain(&mut layer);
    assert!(e.is_empty());
    assert_eq!(status_of(&t[0].bytes), Some(481));
}

#[test]
fn rfc2543_request_without_branch_is_matched() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpora/rfc4475/badbranch.dat"
    ))
    .expect("corpus file");
    layer.handle_datagram(t0, addr(UAC), &text);
    layer.handle_datagram(t0, addr(UAC), &text);
    let (_, e) = drain(&mut layer);
    assert_eq!(
        e.len(),
        1,
        "bare z9hG4bK branch keyed RFC 2543-style, retransmission absorbed"
    );
}

#[test]
fn message_too_large_for_a_datagram_is_refused_cleanly() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let mut big = request("MESSAGE", "z9hG4bKbig", 1);
    big.body = vec![b'x'; 70_000];
    let err = layer
        .send_request(t0, addr(UAS), big.clone())
        .expect_err("too large");
    assert!(
        matches!(err, crate::Error::MessageTooLarge { limit: 65_507, .. }),
        "{err}"
    );
    assert!(
        layer.is_empty() && layer.poll_transmit().is_none(),
        "nothing sent, no state kept"
    );
    // Same on the server side: a 200 with a huge body is refused, the transaction stays.
    layer.handle_datagram(
        t0,
        addr(UAC),
        &request("MESSAGE", "z9hG4bKsmall", 1).to_bytes(),
    );
    let (_, e) = drain(&mut layer);
    let Some(Event::Request {
        id, request: small, ..
    }) = e.into_iter().next()
    else {
        panic!("no request");
    };
    let mut ok = crate::sip::reply::response_to(&small, 200, None);
    ok.body = vec![b'y'; 70_000];
    assert!(layer.respond(t0, id, ok).is_err());
    assert_eq!(layer.server_state(id), Some(ServerState::Trying));
    assert!(layer.poll_transmit().is_none());
}

#[test]
fn overload_spares_in_dialog_requests() {
    let config = LayerConfig {
        max_server_transactions: 1,
        ..LayerConfig::default()
    };
    let mut layer = TransactionLayer::new(config);
    let t0 = Instant::now();
    layer.handle_datagram(
        t0,
        addr(UAC),
        &request("OPTIONS", "z9hG4bKd0", 1).to_bytes(),
    );
    // A new call is refused...
    layer.handle_datagram(t0, addr(UAC), &request("INVITE", "z9hG4bKd1", 1).to_bytes());
    // ...but a BYE inside an existing dialog still gets through.
    let bye = request("BYE", "z9hG4bKd2", 2);
    let mut text = String::from_utf8(bye.to_bytes()).expect("utf8");
    text = text.replace("To: <sip:bob@127.0.0.1>", "To: <sip:bob@127.0.0.1>;tag=bob");
    layer.handle_datagram(t0, addr(UAC), text.as_bytes());
    let (t, e) = drain(&mut layer);
    let methods: Vec<_> = e
        .iter()
        .filter_map(|e| match e {
            Event::Request { request, .. } => Some(request.method),
            _ => None,
        })
        .collect();
    assert_eq!(methods, vec![Method::Options, Method::Bye]);
    assert_eq!(
        t.iter()
            .filter_map(|t| status_of(&t.bytes))
            .collect::<Vec<_>>(),
        vec![503]
    );
}

#[test]
fn invite_stuck_in_proceeding_ends_by_timer_c_or_the_cancel_guard() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKstuck", 1);
    let id = layer
        .send_request(t0, addr(UAS), invite.clone())
        .expect("send");
    let ringing = crate::sip::reply::response_to(&invite, 180, Some(&crate::sip::Tag::new("b")));
    layer.handle_datagram(t0, addr(UAS), &ringing.to_bytes());
    drain(&mut layer);
    // 180 and then silence: Timer C (181 s) ends it.
    let (_, events) = run_clock(&mut layer, t0, Duration::from_secs(180));
    assert!(events.is_empty());
    let (_, events) = run_clock(
        &mut layer,
        t0 + Duration::from_secs(180),
        Duration::from_secs(2),
    );
    assert!(matches!(events.as_slice(), [Event::Timeout { id: t }] if *t == id));
    assert!(layer.is_empty());

    // With a CANCEL sent and no final response at all, 64·T1 is the limit (§9.1).
    let invite = request("INVITE", "z9hG4bKstuck2", 1);
    let id = layer
        .send_request(t0, addr(UAS), invite.clone())
        .expect("send");
    let ringing2 = crate::sip::reply::response_to(&invite, 180, Some(&crate::sip::Tag::new("b")));
    layer.handle_datagram(t0, addr(UAS), &ringing2.to_bytes());
    drain(&mut layer);
    assert!(matches!(layer.cancel(t0, id), CancelOutcome::Sent(_)));
    let (_, events) = run_clock(&mut layer, t0, Duration::from_secs(33));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Timeout { id: t } if *t == id)),
        "{events:?}"
    );
    assert_eq!(layer.client_state(id), None);
}

#[test]
fn rfc2543_ack_in_accepted_reaches_the_tu_and_stops_the_2xx() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    // No magic cookie: keyed RFC 2543-style, so the ACK matches the INVITE's key.
    let invite = request("INVITE", "2543branch", 5);
    let (_, id) = deliver(&mut layer, t0, &invite);
    let ok = crate::sip::reply::with_header(
        crate::sip::reply::response_to(&invite, 200, Some(&crate::sip::Tag::new("b"))),
        rsipstack::sip::Header::Contact("<sip:bob@127.0.0.1:5060>".into()),
    );
    layer.respond(t0, id, ok).expect("200");
    drain(&mut layer);
    let mut ack = request("ACK", "2543branch", 5);
    ack.headers
        .retain(|h| !matches!(h, rsipstack::sip::Header::To(_)));
    ack.headers.push(rsipstack::sip::Header::To(
        "<sip:bob@127.0.0.1>;tag=b".into(),
    ));
    layer.handle_datagram(t0 + Duration::from_millis(100), addr(UAC), &ack.to_bytes());
    let (_, e) = drain(&mut layer);
    assert!(
        matches!(e.as_slice(), [Event::Ack { answered: true, .. }]),
        "{e:?}"
    );
    let (sent, events) = run_clock(
        &mut layer,
        t0 + Duration::from_millis(100),
        Duration::from_secs(40),
    );
    assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
}

#[test]
fn cancel_200_carries_the_invite_tag_and_passes_under_load() {
    let config = LayerConfig {
        max_server_transactions: 1,
        ..LayerConfig::default()
    };
    let mut layer = TransactionLayer::new(config);
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKct", 1);
    let (_, id) = deliver(&mut layer, t0, &invite);
    layer
        .respond(
            t0,
            id,
            crate::sip::reply::response_to(&invite, 180, Some(&crate::sip::Tag::new("ring"))),
        )
        .expect("180");
    drain(&mut layer);
    // The table is full (1 transaction), yet the CANCEL is taken.
    layer.handle_datagram(t0, addr(UAC), &build_cancel(&invite).to_bytes());
    let (t, e) = drain(&mut layer);
    assert!(e.iter().any(|e| matches!(e, Event::Cancelled { .. })));
    let tags: Vec<_> = t
        .iter()
        .filter_map(|t| match parse_datagram(&t.bytes) {
            Ok(Inbound::Response(r)) => Some((r.status_code.code(), MessageIds::of(&r).to_tag)),
            _ => None,
        })
        .collect();
    let ring = Some(crate::sip::Tag::new("ring"));
    assert!(tags.contains(&(487, ring.clone())), "{tags:?}");
    assert!(tags.contains(&(200, ring)), "{tags:?}");
}

#[test]
fn response_with_two_vias_is_discarded() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let options = request("OPTIONS", "z9hG4bKvv", 1);
    layer
        .send_request(t0, addr(UAS), options.clone())
        .expect("send");
    drain(&mut layer);
    let ok = crate::sip::reply::response_to(&options, 200, None);
    let text = String::from_utf8(ok.to_bytes()).expect("utf8").replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKx\r\nVia: ",
        1,
    );
    layer.handle_datagram(t0, addr(UAS), text.as_bytes());
    let (_, e) = drain(&mut layer);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(layer.stats().rejected_malformed, 1);
}

/// A retransmitted non-2xx final (our ACK was lost) gets the same ACK again and
/// reaches the TU once; the lingering transaction keeps only that ACK.
#[test]
fn retransmitted_final_to_an_invite_gets_the_same_ack_again() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKbusy", 1);
    let id = layer
        .send_request(t0, addr(UAS), invite.clone())
        .expect("send");
    drain(&mut layer);
    let busy = crate::sip::reply::response_to(&invite, 486, Some(&crate::sip::Tag::new("b")));
    layer.handle_datagram(t0, addr(UAS), &busy.to_bytes());
    let (first, events) = drain(&mut layer);
    assert_eq!(events.len(), 1, "the 486 reaches the TU");
    assert_eq!(first.len(), 1);
    assert_eq!(method_of(&first[0].bytes), Some(Method::Ack));
    assert_eq!(layer.client_state(id), Some(ClientState::Completed));
    layer.handle_datagram(t0 + Duration::from_millis(500), addr(UAS), &busy.to_bytes());
    let (again, events) = drain(&mut layer);
    assert!(
        events.is_empty(),
        "a retransmission is not reported: {events:?}"
    );
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, first[0].bytes);
    assert_eq!(again[0].destination, addr(UAS));
    // Timer D (32 s over UDP) ends it.
    let (_, events) = run_clock(&mut layer, t0, Duration::from_secs(33));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(layer.client_state(id), None);
}

/// Timer stamps tell deadlines a millisecond apart from each other, are never the
/// "not set" value, and a cleared timer holds none.
#[test]
fn timer_stamps_tell_deadlines_apart_by_the_millisecond() {
    let epoch = Instant::now();
    let at = |us: u64| epoch + Duration::from_micros(us);
    assert_eq!(
        Armed::stamp(epoch, at(32_000_100)),
        Armed::stamp(epoch, at(32_000_900))
    );
    assert_ne!(
        Armed::stamp(epoch, at(32_000_900)),
        Armed::stamp(epoch, at(32_001_000))
    );
    // Before the epoch, at it, and where the milliseconds wrap: set, not 0.
    for t in [
        epoch - Duration::from_millis(5),
        epoch,
        epoch + Duration::from_millis(u32::MAX as u64),
    ] {
        assert_ne!(Armed::stamp(epoch, t), 0);
    }
    let mut armed = Armed::default();
    let stamp = Armed::stamp(epoch, at(500_000));
    armed.set(Timer::G, stamp);
    assert!(armed.is(Timer::G, stamp) && armed.is_set(Timer::G) && !armed.is_set(Timer::H));
    armed.clear(Timer::G);
    assert!(!armed.is(Timer::G, stamp) && !armed.is_set(Timer::G));
}

/// A request sent with a branch a live transaction still holds takes the key over;
/// when the older transaction ends, the newer one keeps it and still gets its
/// response (the older one's end once dropped the key from the table).
#[test]
fn a_transaction_ending_leaves_a_newer_one_with_the_same_key_matched() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let first = request("OPTIONS", "z9hG4bKreused", 1);
    let old = layer
        .send_request(t0, addr(UAS), first)
        .expect("first OPTIONS");
    let second = request("OPTIONS", "z9hG4bKreused", 2);
    let later = t0 + Duration::from_secs(20);
    let new = layer
        .send_request(later, addr(UAS), second.clone())
        .expect("second OPTIONS");
    drain(&mut layer);
    // The first times out (Timer F, 64·T1) and ends; the second has 20 s to go.
    layer.handle_timeout(t0 + Duration::from_secs(33));
    let (_, events) = drain(&mut layer);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Timeout { id } if *id == old)),
        "{events:?}"
    );
    let ok = crate::sip::reply::response_to(&second, 200, Some(&crate::sip::Tag::new("u")));
    layer.handle_datagram(t0 + Duration::from_secs(34), addr(UAS), &ok.to_bytes());
    let (_, events) = drain(&mut layer);
    assert!(
        matches!(events.as_slice(), [Event::Response { id, .. }] if *id == new),
        "{events:?}"
    );
}

/// A request written for the wire opens its client transaction like one built: it is
/// retransmitted on Timer E and its response matches it. INVITE and ACK are refused
/// (an INVITE's transaction needs the request for its CANCEL and ACK).
#[test]
fn a_request_written_for_the_wire_opens_a_client_transaction() {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let t0 = Instant::now();
    let bye = request("BYE", "z9hG4bKwire1", 2);
    let branch = crate::sip::Branch::new("z9hG4bKwire1");
    let id = layer
        .send_request_wire(t0, addr(UAS), Method::Bye, branch.clone(), bye.to_bytes())
        .expect("BYE");
    let (sent, _) = drain(&mut layer);
    assert_eq!(sent.len(), 1);
    assert_eq!(method_of(&sent[0].bytes), Some(Method::Bye));
    layer.handle_timeout(t0 + Duration::from_millis(500));
    let (resent, _) = drain(&mut layer);
    assert_eq!(resent.len(), 1, "Timer E retransmits it");
    let ok = crate::sip::reply::response_to(&bye, 200, Some(&crate::sip::Tag::new("u")));
    layer.handle_datagram(t0 + Duration::from_millis(600), addr(UAS), &ok.to_bytes());
    let (_, events) = drain(&mut layer);
    assert!(
        matches!(events.as_slice(), [Event::Response { id: got, .. }] if *got == id),
        "{events:?}"
    );
    let invite = request("INVITE", "z9hG4bKwire2", 1);
    assert!(
        layer
            .send_request_wire(
                t0,
                addr(UAS),
                Method::Invite,
                crate::sip::Branch::new("z9hG4bKwire2"),
                invite.to_bytes(),
            )
            .is_err()
    );
}
