//! A UAS that answers every call: 180, then 200 with an SDP answer, and 200 to BYE.
//! The far end of call tests (SIPp's `uac`, the simulator's carrier and recorders).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rsipstack::sip::{Header, Method};

use super::dialog::Dialog;
use super::ids::{MessageIds, Tag};
use super::reply::{response_to, with_body, with_header};
use super::transaction::{Event, TransactionLayer};
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
    /// Confirmed dialogs by (Call-ID, local tag).
    dialogs: HashMap<(String, String), Dialog>,
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
            stats: AnswererStats::default(),
            stats_out: None,
        }
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

    fn publish(&self) {
        if let Some(s) = &self.stats_out {
            s.send_replace(self.stats);
        }
    }
}

impl TransactionUser for Answerer {
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        let Event::Request { id, request, .. } = event else {
            if let Event::AckTimeout { .. } = event {
                self.stats.calls_ended += 1;
            }
            return;
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
        let response = match request.method {
            Method::Invite if ids.to_tag.is_none() => {
                let mut ok = response_to(&request, 200, Some(&tag));
                ok = with_header(ok, Header::Contact(format!("<{}>", self.contact).into()));
                if !request.body.is_empty() {
                    let answer = sdp::parse(&request.body).and_then(|offer| {
                        sdp::answer(
                            &offer,
                            &self.codecs,
                            self.media,
                            rand::random::<u32>() as u64,
                        )
                    });
                    match answer {
                        Ok(answer) => ok = with_body(ok, "application/sdp", sdp::to_bytes(&answer)),
                        Err(e) => {
                            tracing::info!(error = %e, "refusing offer");
                            self.stats.refused += 1;
                            let _ = layer.respond(now, id, response_to(&request, 488, Some(&tag)));
                            self.publish();
                            return;
                        }
                    }
                }
                let _ = layer.respond(now, id, response_to(&request, 180, Some(&tag)));
                if let Ok(dialog) = Dialog::from_uas(&request, tag.clone(), &self.contact) {
                    self.dialogs
                        .insert((call_id, tag.as_str().to_owned()), dialog);
                }
                self.stats.calls_answered += 1;
                ok
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
                            response_to(&request, 200, None)
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
