//! A simulated turret's SIP user agent, driven through the transaction layer (no
//! SIP socket here; each call's RTP is bound by [`MediaLeg`]): registration with digest (refreshed,
//! kept alive with OPTIONS, moved to the next TPO of the profile when the current
//! one stops answering), calls out and in (ringing, answer, hold/resume, hang-up,
//! CANCEL), "who answered" notices, and intercom auto-answer. The driver
//! ([`super::Turret`]) feeds it the transaction layer's events, its commands and its
//! timer; what it knows is published as a [`View`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floorwire::sdp::{self, Codec, Direction};
use floorwire::sip::auth::{Challenge, Credentials};
use floorwire::sip::dialog::Dialog;
use floorwire::sip::msg::{Header, Method, Request, Response};
use floorwire::sip::reply::{request_with_body, response_to, with_body, with_header};
use floorwire::sip::transaction::{Event, TransactionId, TransactionLayer, build_ack};
use floorwire::sip::{Branch, Inbound, MessageIds, Tag, parse_datagram};
use serde::Serialize;

use super::media::MediaLeg;
use crate::Error;

/// Ended calls a turret remembers (the latest); older ones are forgotten.
const KEPT_ENDED_CALLS: usize = 64;
/// MESSAGE bodies a turret remembers (the latest).
const KEPT_MESSAGES: usize = 64;

/// How a turret registers and sounds.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Digest user name (the device's: `dev-T-0001`) and password.
    pub username: String,
    pub password: String,
    /// Where the turret's SIP socket is bound.
    pub local: SocketAddr,
    /// The TPOs of its profile, in order.
    pub registrars: Vec<SocketAddr>,
    /// Registration lifetime asked for (s); refreshed at half of it.
    pub expires: u32,
    /// OPTIONS to the registrar this often...
    pub keepalive: Duration,
    /// ...and a registrar silent this long is given up for the next one.
    pub dead_after: Duration,
    /// The tone this turret sends in its calls (Hz).
    pub tone_hz: f64,
    /// Answer every incoming call at once (load generation).
    pub auto_answer: bool,
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Ours, not answered yet.
    Dialling,
    /// The far end rings (ours), or we ring (theirs).
    Ringing,
    Up,
    Held,
    Ended,
}

/// A call as the scenario sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub id: u64,
    pub incoming: bool,
    /// The number dialled (ours) or the caller (theirs).
    pub number: String,
    pub state: CallState,
    /// The final status of a call that failed (ours) or `487` when cancelled.
    pub status: Option<u16>,
    /// Why it ended: `local`, `remote`, `cancelled`, `failed`.
    pub ended_by: Option<String>,
    /// Who answered, from the 200's `X-Floorwire-Answered-By` (ours).
    pub answered_by: Option<String>,
    /// The INVITE asked for auto-answer (intercom).
    pub auto_answer: bool,
    /// Milliseconds from the command (or the INVITE) to the answer.
    pub setup_ms: Option<u64>,
}

/// What the turret knows, published after every change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// The TPO holding our registration.
    pub registered_to: Option<SocketAddr>,
    /// When that registration was accepted.
    #[serde(skip)]
    pub registered_at: Option<Instant>,
    /// Successful REGISTERs so far.
    pub registrations: u64,
    /// Times it gave a silent TPO up for the next one.
    pub failovers: u64,
    /// The last registration failure (status or timeout), if the last attempt failed.
    pub registration_error: Option<String>,
    pub calls: Vec<CallView>,
    /// Bodies of the MESSAGEs received (who took a shared line).
    pub messages: Vec<String>,
}

/// What the turret is asked to do.
#[derive(Debug)]
pub enum Command {
    Register,
    /// Call a number; the call's id is sent back.
    Call {
        number: String,
        reply: tokio::sync::oneshot::Sender<Result<u64, Error>>,
    },
    Answer(u64),
    Hangup(u64),
    Hold(u64, bool),
}

#[derive(Debug)]
struct Call {
    view: CallView,
    media: MediaLeg,
    call_id: String,
    started: Instant,
    dialog: Option<Dialog>,
    /// Ours: the INVITE (kept for CANCEL, ACK and a digest retry) and its transaction.
    invite: Option<Request>,
    invite_tx: Option<TransactionId>,
    auth_tried: bool,
    /// Our re-INVITE in flight: hold (true) or resume (false), applied on its 2xx.
    hold_pending: Option<bool>,
    /// Theirs: the INVITE waiting for our answer, its transaction and our tag.
    pending: Option<(TransactionId, Request, Tag)>,
}

#[derive(Debug, Default)]
struct Registration {
    wanted: bool,
    index: usize,
    call_id: String,
    tag: String,
    cseq: u32,
    tx: Option<TransactionId>,
    sent_at: Option<Instant>,
    auth_tried: bool,
    refresh_at: Option<Instant>,
    retry_at: Option<Instant>,
    last_heard: Option<Instant>,
    keepalive_at: Option<Instant>,
}

/// The user agent.
#[derive(Debug)]
pub struct TurretUa {
    config: UaConfig,
    registration: Registration,
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    keepalives: Vec<TransactionId>,
    view: View,
    changed: bool,
}

fn parse_request(text: &str) -> Result<Request, Error> {
    match parse_datagram(text.as_bytes()) {
        Ok(Inbound::Request(r)) => Ok(r),
        other => Err(Error::Turret(format!("built a bad request: {other:?}"))),
    }
}

fn header_value(headers: &floorwire::sip::msg::Headers, name: &str) -> Option<String> {
    headers.iter().find_map(|h| {
        let text = h.to_string();
        let (n, v) = text.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The digest challenge of a 401 or 407.
fn challenge_of(response: &Response) -> Option<Challenge> {
    response.headers.iter().find_map(|h| match h {
        Header::WwwAuthenticate(v) => Challenge::parse(v.value()).ok(),
        Header::ProxyAuthenticate(v) => Challenge::parse(v.value()).ok(),
        _ => None,
    })
}

fn status(response: &Response) -> u16 {
    response.status_code.code()
}

impl TurretUa {
    pub fn new(config: UaConfig) -> Self {
        Self {
            config,
            registration: Registration {
                call_id: format!("reg-{:016x}", rand::random::<u64>()),
                tag: format!("{:08x}", rand::random::<u32>()),
                ..Registration::default()
            },
            calls: BTreeMap::new(),
            next_call: 1,
            keepalives: Vec::new(),
            view: View::default(),
            changed: true,
        }
    }

    /// The view, if it changed since the last call.
    pub fn take_view(&mut self) -> Option<View> {
        if !self.changed {
            return None;
        }
        // Bounded under load: the oldest ended calls and notices go.
        let ended: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.view.state == CallState::Ended)
            .map(|(id, _)| *id)
            .collect();
        for id in ended
            .iter()
            .take(ended.len().saturating_sub(KEPT_ENDED_CALLS))
        {
            self.calls.remove(id);
        }
        let excess = self.view.messages.len().saturating_sub(KEPT_MESSAGES);
        self.view.messages.drain(..excess);
        self.changed = false;
        self.view.calls = self.calls.values().map(|c| c.view.clone()).collect();
        Some(self.view.clone())
    }

    /// The media of call `id`.
    pub fn media(&self, id: u64) -> Option<MediaLeg> {
        self.calls.get(&id).map(|c| c.media.clone())
    }

    fn registrar(&self) -> Option<SocketAddr> {
        self.config
            .registrars
            .get(self.registration.index % self.config.registrars.len().max(1))
            .copied()
    }

    /// The TPO calls go to: the one we are registered with, else the current one.
    fn outbound(&self) -> Option<SocketAddr> {
        self.view.registered_to.or_else(|| self.registrar())
    }

    fn send_register(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        auth: Option<&Challenge>,
    ) {
        let Some(registrar) = self.registrar() else {
            return;
        };
        let r = &mut self.registration;
        r.cseq += 1;
        let c = &self.config;
        let uri = format!("sip:{registrar}");
        let authorization = auth
            .map(|challenge| {
                let credentials = Credentials::answer(
                    challenge,
                    &c.username,
                    &c.password,
                    "REGISTER",
                    &uri,
                    &format!("{:08x}", rand::random::<u32>()),
                    1,
                );
                format!("Authorization: {}\r\n", credentials.to_header_value())
            })
            .unwrap_or_default();
        let text = format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{user}@{host}>\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: {expires}\r\n\
{authorization}Content-Length: 0\r\n\r\n",
            local = c.local,
            branch = Branch::generate().as_str(),
            user = c.username,
            host = registrar.ip(),
            tag = r.tag,
            call_id = r.call_id,
            cseq = r.cseq,
            expires = c.expires,
        );
        r.auth_tried = auth.is_some();
        r.sent_at = Some(now);
        r.retry_at = None;
        match parse_request(&text).and_then(|req| {
            layer
                .send_request(now, registrar, req)
                .map_err(Error::Floorwire)
        }) {
            Ok(tx) => self.registration.tx = Some(tx),
            Err(e) => self.registration_failed(now, e.to_string(), Duration::from_secs(1)),
        }
    }

    fn registration_failed(&mut self, now: Instant, why: String, retry_in: Duration) {
        tracing::info!(registrar = ?self.registrar(), why, "registration failed");
        self.view.registration_error = Some(why);
        self.view.registered_to = None;
        self.registration.tx = None;
        self.registration.retry_at = Some(now + retry_in);
        self.changed = true;
    }

    /// Gives the current TPO up for the next one of the profile.
    fn fail_over(&mut self, now: Instant, layer: &mut TransactionLayer) {
        let from = self.registrar();
        self.registration.index += 1;
        self.registration.last_heard = None;
        self.registration.keepalive_at = None;
        self.registration.call_id = format!("reg-{:016x}", rand::random::<u64>());
        self.view.failovers += 1;
        self.view.registered_to = None;
        self.changed = true;
        tracing::info!(?from, to = ?self.registrar(), "registrar silent: moving to the next TPO");
        self.send_register(now, layer, None);
    }

    /// Carries out a command.
    pub fn command(&mut self, now: Instant, command: Command, layer: &mut TransactionLayer) {
        match command {
            Command::Register => {
                self.registration.wanted = true;
                self.send_register(now, layer, None);
            }
            Command::Call { number, reply } => {
                let _ = reply.send(self.call(now, &number, layer));
            }
            Command::Answer(id) => self.answer(now, id, layer),
            Command::Hangup(id) => self.hang_up(now, id, layer),
            Command::Hold(id, on) => self.hold(now, id, on, layer),
        }
        self.changed = true;
    }

    fn call(
        &mut self,
        now: Instant,
        number: &str,
        layer: &mut TransactionLayer,
    ) -> Result<u64, Error> {
        let tpo = self
            .outbound()
            .ok_or_else(|| Error::Turret("no TPO to call through".into()))?;
        let media = MediaLeg::start(self.config.local.ip(), self.config.tone_hz)?;
        let offer = sdp::to_bytes(&sdp::offer(
            &[Codec::Pcma, Codec::Pcmu],
            media.local,
            rand::random::<u32>() as u64,
        ));
        let call_id = format!("{:016x}@{}", rand::random::<u64>(), self.config.local.ip());
        let c = &self.config;
        let text = format!(
            "INVITE sip:{number}@{tpo} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{number}@{host}>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{user}@{local}>\r\nContent-Length: 0\r\n\r\n",
            local = c.local,
            branch = Branch::generate().as_str(),
            user = c.username,
            host = tpo.ip(),
            tag = Tag::generate().as_str(),
        );
        let sent = parse_request(&text).and_then(|request| {
            let invite = request_with_body(request, "application/sdp", offer);
            let tx = layer
                .send_request(now, tpo, invite.clone())
                .map_err(Error::Floorwire)?;
            Ok((invite, tx))
        });
        let (invite, tx) = match sent {
            Ok(sent) => sent,
            Err(e) => {
                media.stop();
                return Err(e);
            }
        };
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(
            id,
            Call {
                view: CallView {
                    id,
                    incoming: false,
                    number: number.to_owned(),
                    state: CallState::Dialling,
                    status: None,
                    ended_by: None,
                    answered_by: None,
                    auto_answer: false,
                    setup_ms: None,
                },
                media,
                call_id,
                started: now,
                dialog: None,
                invite: Some(invite),
                invite_tx: Some(tx),
                auth_tried: false,
                hold_pending: None,
                pending: None,
            },
        );
        Ok(id)
    }

    fn answer(&mut self, now: Instant, id: u64, layer: &mut TransactionLayer) {
        let local = self.config.local;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some((tx, request, tag)) = call.pending.take() else {
            return;
        };
        let contact = format!("sip:turret@{local}");
        let answer = sdp::parse(&request.body).and_then(|offer| {
            let answer = sdp::answer(
                &offer,
                &[Codec::Pcma, Codec::Pcmu],
                call.media.local,
                rand::random::<u32>() as u64,
            )?;
            Ok((sdp::audio_endpoint(&offer), answer))
        });
        let response = match answer {
            Ok((remote, answer)) => {
                call.media.set_remote(remote, true);
                call.dialog = Dialog::from_uas(&request, tag.clone(), &contact).ok();
                call.view.state = CallState::Up;
                call.view.setup_ms = Some(now.duration_since(call.started).as_millis() as u64);
                with_body(
                    with_header(
                        response_to(&request, 200, Some(&tag)),
                        Header::Contact(format!("<{contact}>").into()),
                    ),
                    "application/sdp",
                    sdp::to_bytes(&answer),
                )
            }
            Err(e) => {
                tracing::info!(error = %e, "cannot answer the offer");
                end(call, "failed", Some(488));
                response_to(&request, 488, Some(&tag))
            }
        };
        let _ = layer.respond(now, tx, response);
    }

    fn hang_up(&mut self, now: Instant, id: u64, layer: &mut TransactionLayer) {
        let local = self.config.local;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match call.view.state {
            CallState::Ended => {}
            CallState::Dialling | CallState::Ringing if !call.view.incoming => {
                if let Some(tx) = call.invite_tx {
                    let _ = layer.cancel(now, tx);
                }
                end(call, "local", None);
            }
            CallState::Ringing => {
                // Theirs, not answered: decline.
                if let Some((tx, request, tag)) = call.pending.take() {
                    let _ = layer.respond(now, tx, response_to(&request, 486, Some(&tag)));
                }
                end(call, "local", Some(486));
            }
            _ => {
                if let Some(dialog) = call.dialog.as_mut()
                    && let Ok(bye) = dialog.request(Method::Bye, &local.to_string(), None)
                    && let Some(target) = remote_target(dialog, &bye)
                {
                    let _ = layer.send_request(now, target, bye);
                }
                end(call, "local", None);
            }
        }
    }

    fn hold(&mut self, now: Instant, id: u64, on: bool, layer: &mut TransactionLayer) {
        let local = self.config.local;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if !matches!(call.view.state, CallState::Up | CallState::Held) {
            return;
        }
        let mut offer = sdp::offer(&[Codec::Pcma, Codec::Pcmu], call.media.local, 1);
        if on {
            sdp::hold(&mut offer);
        }
        if let Some(dialog) = call.dialog.as_mut()
            && let Ok(reinvite) = dialog.request(Method::Invite, &local.to_string(), None)
            && let Some(target) = remote_target(dialog, &reinvite)
        {
            let reinvite = request_with_body(reinvite, "application/sdp", sdp::to_bytes(&offer));
            if let Ok(tx) = layer.send_request(now, target, reinvite.clone()) {
                call.invite_tx = Some(tx);
                call.invite = Some(reinvite);
                // The state changes when the far end accepts (its 2xx).
                call.hold_pending = Some(on);
            }
        }
    }

    /// Handles one event of the transaction layer.
    pub fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        self.changed = true;
        match event {
            Event::Request { id, request, .. } => self.on_request(now, id, request, layer),
            Event::Response { id, response, .. } => self.on_response(now, id, response, layer),
            Event::Stray2xx { response, ids } => {
                // A retransmitted 200: ACK it again.
                if let Some(call) = self.calls.values_mut().find(|c| {
                    ids.call_id
                        .as_ref()
                        .is_some_and(|i| i.as_str() == c.call_id)
                }) && let (Some(invite), Some(dialog)) = (&call.invite, call.dialog.as_ref())
                {
                    let ack = build_ack(invite, &response);
                    if let Some(target) = remote_target(dialog, &ack) {
                        let _ = layer.send_stateless(target, ack.to_bytes());
                    }
                }
            }
            Event::Cancelled { invite } => {
                if let Some(call) = self
                    .calls
                    .values_mut()
                    .find(|c| c.pending.as_ref().is_some_and(|p| p.0 == invite))
                {
                    call.pending = None;
                    end(call, "cancelled", Some(487));
                }
            }
            Event::Timeout { id } => {
                if self.registration.tx == Some(id) {
                    self.registration_failed(now, "no answer".into(), Duration::ZERO);
                } else if let Some(call) = self.calls.values_mut().find(|c| c.invite_tx == Some(id))
                    && matches!(call.view.state, CallState::Dialling | CallState::Ringing)
                {
                    end(call, "failed", Some(408));
                }
                self.keepalives.retain(|k| *k != id);
            }
            Event::AckTimeout { .. } | Event::Ack { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: Request,
        layer: &mut TransactionLayer,
    ) {
        let ids = MessageIds::of(&request);
        let call_id = ids
            .call_id
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let tag = Tag::generate();
        let existing = self.calls.values_mut().find(|c| c.call_id == call_id);
        let response = match (request.method, existing) {
            (Method::Invite, None) if ids.to_tag.is_none() => {
                let Ok(media) = MediaLeg::start(self.config.local.ip(), self.config.tone_hz) else {
                    let _ = layer.respond(now, id, response_to(&request, 503, Some(&tag)));
                    return;
                };
                let from = header_value(&request.headers, "From").unwrap_or_default();
                let number = floorwire::sip::syntax::name_addr_user(&from)
                    .unwrap_or_default()
                    .to_owned();
                let auto_answer = header_value(&request.headers, "Call-Info")
                    .is_some_and(|v| v.contains("answer-after=0"));
                let call = self.next_call;
                self.next_call += 1;
                let _ = layer.respond(now, id, response_to(&request, 180, Some(&tag)));
                self.calls.insert(
                    call,
                    Call {
                        view: CallView {
                            id: call,
                            incoming: true,
                            number,
                            state: CallState::Ringing,
                            status: None,
                            ended_by: None,
                            answered_by: None,
                            auto_answer,
                            setup_ms: None,
                        },
                        media,
                        call_id,
                        started: now,
                        dialog: None,
                        invite: None,
                        invite_tx: None,
                        auth_tried: false,
                        hold_pending: None,
                        pending: Some((id, request, tag)),
                    },
                );
                if auto_answer || self.config.auto_answer {
                    self.answer(now, call, layer);
                }
                return;
            }
            (Method::Message, _) => {
                self.view
                    .messages
                    .push(String::from_utf8_lossy(&request.body).into_owned());
                response_to(&request, 200, Some(&tag))
            }
            (Method::Options, _) => response_to(&request, 200, Some(&tag)),
            (_, None) => response_to(&request, 481, Some(&tag)),
            (method, Some(call)) => {
                let accepted = call
                    .dialog
                    .as_mut()
                    .map_or(Err(481), |d| d.receive_request(&request));
                match (method, accepted) {
                    (_, Err(status)) => response_to(&request, status, None),
                    (Method::Bye, Ok(())) => {
                        end(call, "remote", None);
                        response_to(&request, 200, None)
                    }
                    (Method::Invite, Ok(())) => {
                        // A re-INVITE: answer its offer, holding when asked to.
                        match sdp::parse(&request.body).and_then(|offer| {
                            let held = offer.medias.first().is_some_and(|m| {
                                matches!(
                                    sdp::direction(&offer, m),
                                    Direction::SendOnly | Direction::Inactive
                                )
                            });
                            let answer = sdp::answer(
                                &offer,
                                &[Codec::Pcma, Codec::Pcmu],
                                call.media.local,
                                2,
                            )?;
                            Ok((sdp::audio_endpoint(&offer), held, answer))
                        }) {
                            Ok((remote, held, answer)) => {
                                call.media.set_remote(remote, !held);
                                with_body(
                                    response_to(&request, 200, None),
                                    "application/sdp",
                                    sdp::to_bytes(&answer),
                                )
                            }
                            Err(_) => response_to(&request, 488, None),
                        }
                    }
                    (_, Ok(())) => response_to(&request, 200, None),
                }
            }
        };
        let _ = layer.respond(now, id, response);
    }

    fn on_response(
        &mut self,
        now: Instant,
        id: TransactionId,
        response: Response,
        layer: &mut TransactionLayer,
    ) {
        let code = status(&response);
        if self.keepalives.contains(&id) {
            self.registration.last_heard = Some(now);
            if code >= 200 {
                self.keepalives.retain(|k| *k != id);
            }
            return;
        }
        if self.registration.tx == Some(id) {
            self.registration.last_heard = Some(now);
            if code < 200 {
                return;
            }
            self.registration.tx = None;
            match code {
                200..=299 => {
                    let r = &mut self.registration;
                    r.refresh_at =
                        Some(now + Duration::from_secs(u64::from(self.config.expires / 2).max(1)));
                    r.keepalive_at = Some(now + self.config.keepalive);
                    if self.view.registered_to != self.registrar() {
                        self.view.registered_at = Some(now);
                    }
                    self.view.registered_to = self.registrar();
                    self.view.registrations += 1;
                    self.view.registration_error = None;
                    tracing::info!(registrar = ?self.view.registered_to, "registered");
                }
                401 | 407 if !self.registration.auth_tried => match challenge_of(&response) {
                    Some(c) => self.send_register(now, layer, Some(&c)),
                    None => self.registration_failed(
                        now,
                        format!("{code} without a challenge"),
                        Duration::from_secs(1),
                    ),
                },
                // The TSS may not have handed the TPOs a fresh credential yet: try again.
                401 | 403 | 407 => {
                    self.registration_failed(now, format!("{code}"), Duration::from_millis(500))
                }
                500..=599 => {
                    self.registration_failed(now, format!("{code}"), Duration::from_millis(500));
                }
                _ => self.registration_failed(now, format!("{code}"), Duration::from_secs(2)),
            }
            return;
        }
        let username = self.config.username.clone();
        let password = self.config.password.clone();
        let Some(call) = self.calls.values_mut().find(|c| c.invite_tx == Some(id)) else {
            return;
        };
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let reinvite = call.dialog.is_some() && MessageIds::of(&invite).to_tag.is_some();
        match code {
            100 => {}
            101..=199 => {
                if call.view.state == CallState::Dialling {
                    call.view.state = CallState::Ringing;
                }
            }
            200..=299 => {
                if !reinvite {
                    call.dialog = Dialog::from_uac(&invite, &response).ok();
                }
                if let Some(dialog) = call.dialog.as_ref() {
                    let ack = build_ack(&invite, &response);
                    if let Some(target) = remote_target(dialog, &ack) {
                        let _ = layer.send_stateless(target, ack.to_bytes());
                    }
                }
                if reinvite {
                    if let Some(on) = call.hold_pending.take() {
                        call.media.set_remote(None, !on);
                        call.view.state = if on { CallState::Held } else { CallState::Up };
                    }
                    return;
                }
                if call.view.state == CallState::Ended {
                    // Answered after we hung up (CANCEL crossed the 200): hang up now.
                    if let Some(dialog) = call.dialog.as_mut()
                        && let Ok(bye) =
                            dialog.request(Method::Bye, &self.config.local.to_string(), None)
                        && let Some(target) = remote_target(dialog, &bye)
                    {
                        let _ = layer.send_request(now, target, bye);
                    }
                    return;
                }
                let remote = sdp::parse(&response.body)
                    .ok()
                    .and_then(|s| sdp::audio_endpoint(&s));
                call.media.set_remote(remote, true);
                call.view.state = CallState::Up;
                call.view.setup_ms = Some(now.duration_since(call.started).as_millis() as u64);
                call.view.answered_by = header_value(&response.headers, crate::turret::ANSWERED_BY);
            }
            401 | 407 if !call.auth_tried && !reinvite => {
                let Some(challenge) = challenge_of(&response) else {
                    end(call, "failed", Some(code));
                    return;
                };
                let uri = invite.uri.to_string();
                let credentials = Credentials::answer(
                    &challenge,
                    &username,
                    &password,
                    "INVITE",
                    &uri,
                    &format!("{:08x}", rand::random::<u32>()),
                    1,
                );
                let name = if code == 407 {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                };
                let text = String::from_utf8_lossy(&invite.to_bytes()).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let head = bump_invite(head);
                let retry = format!(
                    "{head}\r\n{name}: {}\r\n\r\n{body}",
                    credentials.to_header_value()
                );
                call.auth_tried = true;
                if let (Ok(retry), Some(tpo)) = (
                    parse_request(&retry),
                    self.view
                        .registered_to
                        .or(self.config.registrars.first().copied()),
                ) && let Ok(tx) = layer.send_request(now, tpo, retry.clone())
                {
                    call.invite_tx = Some(tx);
                    call.invite = Some(retry);
                }
            }
            // A refused re-INVITE leaves the call as it was.
            _ if reinvite => call.hold_pending = None,
            _ => end(call, "failed", Some(code)),
        }
    }

    /// When the UA's own timer is next due.
    pub fn next_timer(&self) -> Option<Instant> {
        let r = &self.registration;
        if !r.wanted {
            return None;
        }
        [
            r.refresh_at,
            r.retry_at,
            r.keepalive_at,
            r.sent_at.map(|s| s + self.config.dead_after),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Refreshes, retries, keep-alives and failover.
    pub fn on_timer(&mut self, now: Instant, layer: &mut TransactionLayer) {
        if !self.registration.wanted {
            return;
        }
        let dead_after = self.config.dead_after;
        // A REGISTER unanswered, or a registrar silent to keep-alives: the next TPO.
        let waiting_since = self.registration.tx.and(self.registration.sent_at);
        let silent = self.view.registered_to.is_some()
            && self
                .registration
                .last_heard
                .is_some_and(|h| now.duration_since(h) > dead_after);
        if waiting_since.is_some_and(|s| now.duration_since(s) >= dead_after) || silent {
            self.fail_over(now, layer);
            return;
        }
        if self.registration.tx.is_none() {
            self.registration.sent_at = None;
        }
        if self.registration.retry_at.is_some_and(|at| at <= now) {
            self.registration.retry_at = None;
            self.send_register(now, layer, None);
            return;
        }
        if self.registration.refresh_at.is_some_and(|at| at <= now)
            && self.registration.tx.is_none()
        {
            self.registration.refresh_at = None;
            self.send_register(now, layer, None);
            return;
        }
        if let (Some(at), Some(registrar)) =
            (self.registration.keepalive_at, self.view.registered_to)
            && at <= now
        {
            self.registration.keepalive_at = Some(now + self.config.keepalive);
            let c = &self.config;
            let text = format!(
                "OPTIONS sip:{registrar} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={tag}\r\nTo: <sip:{registrar}>\r\n\
Call-ID: ka-{id:016x}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                local = c.local,
                branch = Branch::generate().as_str(),
                user = c.username,
                host = registrar.ip(),
                tag = self.registration.tag,
                id = rand::random::<u64>(),
            );
            if let Ok(options) = parse_request(&text)
                && let Ok(tx) = layer.send_request(now, registrar, options)
            {
                self.keepalives.push(tx);
            }
        }
    }

    /// Stops every call's media (the turret is going away).
    pub fn stop_media(&mut self) {
        for call in self.calls.values() {
            call.media.stop();
        }
    }
}

/// Ends a call: state, reason, media stopped.
fn end(call: &mut Call, by: &str, status: Option<u16>) {
    if call.view.state == CallState::Ended {
        return;
    }
    call.view.state = CallState::Ended;
    call.view.ended_by = Some(by.to_owned());
    call.view.status = status.or(call.view.status);
    call.media.stop();
}

/// The INVITE's head with CSeq 2 and a new branch (a digest retry is a new transaction).
fn bump_invite(head: &str) -> String {
    head.lines()
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("cseq:") {
                "CSeq: 2 INVITE".to_owned()
            } else if l.to_ascii_lowercase().starts_with("via:") {
                let (sent, _) = l.split_once(";branch=").unwrap_or((l, ""));
                format!("{sent};branch={};rport", Branch::generate().as_str())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Where an in-dialog request goes: its Request-URI's host and port (we keep no
/// route sets pointing elsewhere: the TPO is the B2BUA and our only peer).
fn remote_target(_dialog: &Dialog, request: &Request) -> Option<SocketAddr> {
    let host = request.uri.host_with_port.to_string();
    host.parse()
        .ok()
        .or_else(|| format!("{host}:5060").parse().ok())
}
