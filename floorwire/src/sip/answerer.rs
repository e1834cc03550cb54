//! A UAS that answers every call: 180, then 200 with an SDP answer, and 200 to BYE.
//! The far end of call tests (SIPp's `uac`, the simulator's carrier and recorders).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rsipstack::sip::{Header, Method};

use super::dialog::Dialog;
use super::ids::{MessageIds, Tag};
use super::reply::{response_to, with_body, with_header};
use super::transaction::{Event, TransactionId, TransactionLayer};
use super::uas::{UasPolicy, check_request};
use super::udp::TransactionUser;
use crate::sdp::{self, Codec};

/// Counters of what the answerer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswererStats {
    pub calls_answered: u64,
    pub calls_ended: u64,
    pub refused: u64,
}

/// Answers INVITEs, OPTIONS and BYEs. Media is announced at `media` but not sent.
#[derive(Debug)]
pub struct Answerer {
    policy: UasPolicy,
    contact: String,
    media: SocketAddr,
    codecs: Vec<Codec>,
    /// Dialogs by (Call-ID, local tag).
    dialogs: HashMap<(String, String), Dialog>,
    /// Answered INVITEs whose ACK has not come yet, by transaction: an ACK that never
    /// comes (`Event::AckTimeout`) ends the dialog.
    awaiting_ack: HashMap<TransactionId, (String, String)>,
    /// Dialogs held at most; past this, new calls get 503.
    max_dialogs: usize,
    stats: AnswererStats,
    stats_out: Option<tokio::sync::watch::Sender<AnswererStats>>,
}

impl Answerer {
    /// An answerer reachable at `contact` (a SIP URI) announcing media at `media`.
    pub fn new(contact: impl Into<String>, media: SocketAddr) -> Self {
        Self {
            policy: UasPolicy::default(),
            contact: contact.into(),
            media,
            codecs: vec![Codec::Pcma, Codec::Pcmu, Codec::G722, Codec::TelephoneEvent],
            dialogs: HashMap::new(),
            awaiting_ack: HashMap::new(),
            max_dialogs: 100_000,
            stats: AnswererStats::default(),
            stats_out: None,
        }
    }

    /// Sets the most dialogs held at once (100,000 by default).
    pub fn with_max_dialogs(mut self, max: usize) -> Self {
        self.max_dialogs = max;
        self
    }

    /// Publishes counters on every change.
    pub fn with_stats(mut self, sender: tokio::sync::watch::Sender<AnswererStats>) -> Self {
        self.stats_out = Some(sender);
        self
    }

    /// Dialogs currently up.
    pub fn active_calls(&self) -> usize {
        self.dialogs.len()
    }

    /// The SDP answer to the request's offer, if it carries one.
    fn answer_offer(
        &self,
        request: &rsipstack::sip::Request,
    ) -> Result<Option<Vec<u8>>, crate::Error> {
        if request.body.is_empty() || !matches!(request.method, Method::Invite | Method::Update) {
            return Ok(None);
        }
        let offer = sdp::parse(&request.body)?;
        let answer = sdp::answer(
            &offer,
            &self.codecs,
            self.media,
            rand::random::<u32>() as u64,
        )?;
        Ok(Some(sdp::to_bytes(&answer)))
    }

    fn publish(&self) {
        if let Some(s) = &self.stats_out {
            s.send_replace(self.stats);
        }
    }
}

impl TransactionUser for Answerer {
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        let (id, request) = match event {
            Event::Request { id, request, .. } => (id, request),
            Event::Ack { request, .. } => {
                let ids = MessageIds::of(&request);
                if let (Some(call_id), Some(tag)) = (ids.call_id, ids.to_tag) {
                    let key = (call_id.as_str().to_owned(), tag.as_str().to_owned());
                    self.awaiting_ack.retain(|_, k| *k != key);
                }
                return;
            }
            Event::AckTimeout { id } => {
                // §13.3.1.4: no ACK for our 2xx; the call never started.
                if let Some(key) = self.awaiting_ack.remove(&id) {
                    self.dialogs.remove(&key);
                    self.stats.calls_ended += 1;
                    tracing::info!(call_id = %key.0, "no ACK for the 200: call dropped");
                    self.publish();
                }
                return;
            }
            _ => return,
        };
        let tag = Tag::generate();
        if let Err(refusal) = check_request(&request, &self.policy) {
            self.stats.refused += 1;
            let _ = layer.respond(now, id, refusal.response(&request, &tag));
            self.publish();
            return;
        }
        let ids = MessageIds::of(&request);
        let call_id = ids
            .call_id
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        // An offer (initial INVITE or re-INVITE) gets an answer, or 488 (RFC 3264 §6).
        let answer = match self.answer_offer(&request) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::info!(error = %e, "refusing offer");
                self.stats.refused += 1;
                let _ = layer.respond(now, id, response_to(&request, 488, Some(&tag)));
                self.publish();
                return;
            }
        };
        let with_answer = |response| match &answer {
            Some(body) => with_body(response, "application/sdp", body.clone()),
            None => response,
        };
        let contact = Header::Contact(format!("<{}>", self.contact).into());
        let response = match request.method {
            Method::Invite if ids.to_tag.is_none() && self.dialogs.len() >= self.max_dialogs => {
                self.stats.refused += 1;
                with_header(
                    response_to(&request, 503, Some(&tag)),
                    Header::RetryAfter("5".into()),
                )
            }
            Method::Invite if ids.to_tag.is_none() => {
                let _ = layer.respond(now, id, response_to(&request, 180, Some(&tag)));
                if let Ok(dialog) = Dialog::from_uas(&request, tag.clone(), &self.contact) {
                    let key = (call_id, tag.as_str().to_owned());
                    self.awaiting_ack.insert(id, key.clone());
                    self.dialogs.insert(key, dialog);
                }
                self.stats.calls_answered += 1;
                tracing::debug!("call answered");
                with_answer(with_header(response_to(&request, 200, Some(&tag)), contact))
            }
            Method::Bye | Method::Invite | Method::Update | Method::Info => {
                let key = (
                    call_id,
                    ids.to_tag
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                );
                match self.dialogs.get_mut(&key) {
                    None => response_to(&request, 481, Some(&tag)),
                    Some(dialog) => match dialog.receive_request(&request) {
                        Err(status) => response_to(&request, status, None),
                        Ok(()) if request.method == Method::Bye => {
                            self.dialogs.remove(&key);
                            self.stats.calls_ended += 1;
                            tracing::debug!("call ended by BYE");
                            response_to(&request, 200, None)
                        }
                        Ok(()) if request.method == Method::Invite => {
                            with_answer(with_header(response_to(&request, 200, None), contact))
                        }
                        Ok(()) => response_to(&request, 200, None),
                    },
                }
            }
            _ => response_to(&request, 200, Some(&tag)),
        };
        let _ = layer.respond(now, id, response);
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use rsipstack::sip::{Request, Response};

    use super::*;
    use crate::sdp::{Direction, direction};
    use crate::sip::ingress::{Inbound, parse_datagram};
    use crate::sip::transaction::LayerConfig;

    const UAC: &str = "127.0.0.1:5070";

    /// Runs one request through a layer driven by the answerer; returns the final response.
    fn exchange(
        layer: &mut TransactionLayer,
        answerer: &mut Answerer,
        request: &Request,
    ) -> Vec<Response> {
        let now = Instant::now();
        let source: SocketAddr = UAC.parse().expect("addr");
        layer.handle_datagram(now, source, &request.to_bytes());
        while let Some(e) = layer.poll_event() {
            answerer.on_event(now, e, layer);
        }
        std::iter::from_fn(|| layer.poll_transmit())
            .filter_map(|t| match parse_datagram(&t.bytes) {
                Ok(Inbound::Response(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn invite(
        offer: &crate::sdp::Session,
        branch: &str,
        cseq: u32,
        to_tag: Option<&str>,
    ) -> Request {
        let body = crate::sdp::to_bytes(offer);
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let text = format!(
            "INVITE sip:uas@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:uas@127.0.0.1>{to_tag}\r\n\
Call-ID: answerer-test\r\nCSeq: {cseq} INVITE\r\nContact: <sip:a@{UAC}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = text.into_bytes();
        bytes.extend(body);
        match parse_datagram(&bytes) {
            Ok(Inbound::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_offer_holds_and_hangs_up() {
        let mut layer = TransactionLayer::new(LayerConfig::default());
        let media: SocketAddr = "127.0.0.1:30000".parse().expect("addr");
        let mut answerer = Answerer::new("sip:uas@127.0.0.1:5060", media);
        let offer = crate::sdp::offer(
            &[Codec::Pcma, Codec::TelephoneEvent],
            "127.0.0.1:4000".parse().expect("a"),
            1,
        );
        let responses = exchange(
            &mut layer,
            &mut answerer,
            &invite(&offer, "z9hG4bKi1", 1, None),
        );
        let codes: Vec<u16> = responses.iter().map(|r| r.status_code.code()).collect();
        assert_eq!(codes, vec![100, 180, 200]);
        let ok = &responses[2];
        let answer = crate::sdp::parse(&ok.body).expect("answer");
        assert_eq!(crate::sdp::audio_endpoint(&answer), Some(media));
        let tag = MessageIds::of(ok).to_tag.expect("To tag");
        assert_eq!(
            MessageIds::of(&responses[1]).to_tag,
            Some(tag.clone()),
            "180 and 200 share the tag"
        );
        assert_eq!(answerer.active_calls(), 1);

        // Hold: re-INVITE with sendonly gets a recvonly answer.
        let mut held = offer.clone();
        crate::sdp::hold(&mut held);
        let responses = exchange(
            &mut layer,
            &mut answerer,
            &invite(&held, "z9hG4bKi2", 2, Some(tag.as_str())),
        );
        let ok = responses.last().expect("answer");
        assert_eq!(ok.status_code.code(), 200);
        let answer = crate::sdp::parse(&ok.body).expect("answer");
        assert_eq!(direction(&answer, &answer.medias[0]), Direction::RecvOnly);

        // A re-INVITE with an older CSeq is refused 500 (§12.2.2).
        let responses = exchange(
            &mut layer,
            &mut answerer,
            &invite(&held, "z9hG4bKi3", 1, Some(tag.as_str())),
        );
        assert_eq!(responses.last().map(|r| r.status_code.code()), Some(500));

        // BYE ends the call; a second BYE finds no dialog.
        let bye = |branch: &str, cseq: u32| {
            let text = format!(
                "BYE sip:uas@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {UAC};branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:uas@127.0.0.1>;tag={}\r\n\
Call-ID: answerer-test\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n",
                tag.as_str()
            );
            match parse_datagram(text.as_bytes()) {
                Ok(Inbound::Request(r)) => r,
                other => panic!("{other:?}"),
            }
        };
        let codes: Vec<u16> = exchange(&mut layer, &mut answerer, &bye("z9hG4bKb1", 4))
            .iter()
            .map(|r| r.status_code.code())
            .collect();
        assert_eq!(codes, vec![200]);
        assert_eq!(answerer.active_calls(), 0);
        let codes: Vec<u16> = exchange(&mut layer, &mut answerer, &bye("z9hG4bKb2", 5))
            .iter()
            .map(|r| r.status_code.code())
            .collect();
        assert_eq!(codes, vec![481]);
    }

    #[test]
    fn unacknowledged_200_ends_the_dialog_and_the_cap_refuses_503() {
        let mut layer = TransactionLayer::new(LayerConfig::default());
        let media: SocketAddr = "127.0.0.1:30000".parse().expect("addr");
        let mut answerer = Answerer::new("sip:uas@127.0.0.1:5060", media).with_max_dialogs(1);
        let offer = crate::sdp::offer(&[Codec::Pcma], "127.0.0.1:4000".parse().expect("a"), 1);
        let t0 = Instant::now();
        let codes: Vec<u16> = exchange(
            &mut layer,
            &mut answerer,
            &invite(&offer, "z9hG4bKna1", 1, None),
        )
        .iter()
        .map(|r| r.status_code.code())
        .collect();
        assert_eq!(codes, vec![100, 180, 200]);
        // The cap is reached: the next call is refused.
        let mut second = invite(&offer, "z9hG4bKna2", 1, None);
        second
            .headers
            .retain(|h| !matches!(h, rsipstack::sip::Header::CallId(_)));
        second
            .headers
            .push(rsipstack::sip::Header::CallId("second-call".into()));
        let codes: Vec<u16> = exchange(&mut layer, &mut answerer, &second)
            .iter()
            .map(|r| r.status_code.code())
            .collect();
        assert_eq!(codes, vec![100, 503]);
        // No ACK ever comes: after 64·T1 the layer gives up and the dialog goes.
        let later = t0 + std::time::Duration::from_secs(33);
        layer.handle_timeout(later);
        while let Some(e) = layer.poll_event() {
            answerer.on_event(later, e, &mut layer);
        }
        assert_eq!(answerer.active_calls(), 0);
    }

    #[test]
    fn offer_without_common_codec_gets_488() {
        let mut layer = TransactionLayer::new(LayerConfig::default());
        let mut answerer = Answerer::new(
            "sip:uas@127.0.0.1:5060",
            "127.0.0.1:30000".parse().expect("addr"),
        );
        let offer = crate::sdp::parse(
            b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n",
        )
        .expect("offer");
        let codes: Vec<u16> = exchange(
            &mut layer,
            &mut answerer,
            &invite(&offer, "z9hG4bKn1", 1, None),
        )
        .iter()
        .map(|r| r.status_code.code())
        .collect();
        assert_eq!(codes, vec![100, 488]);
        assert_eq!(answerer.active_calls(), 0);
    }
}
