//! A back-to-back user agent (sans-IO): every call is two independent dialogs, leg A
//! (the caller, towards whom we are the UAS) and leg B (the callee, towards whom we are
//! the UAC). Nothing of leg A's Via, Contact, Record-Route or Call-ID reaches leg B.
//!
//! The core does the SIP mechanics — provisional and final responses relayed, early
//! media, CANCEL, BYE from either side, re-INVITE and other in-dialog requests relayed,
//! the ACK of leg B sent at once, failover to the next destination on 408/503/timeout,
//! or parallel forking (first 2xx wins, the other branches CANCELled and told) —
//! and asks two collaborators for the rest:
//! - a [`Router`] decides where a new call goes and what it looks like there (numbers,
//!   codecs, extra headers), or refuses it;
//! - a [`MediaAnchor`] gives each leg a local RTP address and relays between them.
//!
//! Each established call is a [`CallSnapshot`] of plain data; every change to one is
//! reported by [`B2bua::poll_change`] so an active/standby pair can replicate the call
//! table, and [`B2bua::restore`] takes a call over from a snapshot.

use crate::util::FastMap;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsipstack::sip::{
    Header, Headers, Method, Request, Response, Uri, Version,
    headers::untyped::{CSeq, CallId, From, MaxForwards, RetryAfter, To, Via},
};
use serde::{Deserialize, Serialize};

use super::dialog::Dialog;
use super::ids::{Branch as ViaBranch, CallId as CallIdValue, MessageIds, Tag};
use super::reply::{request_with_body, response_to, response_wire, with_header};
use super::siprec;
use super::syntax::{name_addr_user, parse_name_addr, sip_uri_user};
use super::transaction::{CancelOutcome, Event, TransactionId, TransactionLayer};
use super::uas::{UasPolicy, check_proxy_request, check_request};
use super::udp::TransactionUser;
use crate::error::Error;
use crate::rtp::anchor::{MediaAnchor, MediaMapping, RecorderStreams};
use crate::rtp::g711::Law;
use crate::rtp::relay::Transcode;
use crate::sdp::{self, Codec, Session};

/// Why the router refuses a call: the status for leg A and a reason for the log (and
/// the `Warning` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRefusal {
    pub status: u16,
    pub reason: String,
    /// Seconds for Retry-After (load refusals).
    pub retry_after: Option<u32>,
}

/// One branch of a call rung in parallel: a device, or a peer that rings its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub destination: SocketAddr,
    /// This branch's Request-URI (the device's registered Contact, say).
    pub request_uri: String,
    /// Extra headers for this branch only (auto-answer for an intercom, say).
    pub headers: Vec<(String, String)>,
    /// Who this branch rings (a user, a peer): named in the notice the other branches
    /// get when it answers, and in the call's [`CallSummary`].
    pub party: String,
}

/// Where and how a new call goes out on leg B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Next hops, tried in order when one times out or answers 408/503 (ignored when
    /// `forks` is not empty).
    pub destinations: Vec<SocketAddr>,
    /// Leg B's Request-URI for `destinations`.
    pub request_uri: String,
    /// Branches rung all at once instead of `destinations`: the first to answer 2xx
    /// wins and the others get CANCEL; the call fails only when every branch has.
    pub forks: Vec<Fork>,
    /// With forks: each branch cancelled because another answered gets a MESSAGE
    /// (`text/plain`, `line: THIS` and `answered-by: PARTY` lines) saying who took it.
    pub taken_notice: Option<String>,
    /// Leg B's From (name-addr, without tag: the core adds its own).
    pub from: String,
    /// Leg B's To (name-addr).
    pub to: String,
    /// Extra headers for leg B's INVITE (e.g. `Priority: emergency`).
    pub headers: Vec<(String, String)>,
    /// Codecs to offer on leg B, in order; `None` passes leg A's offer through.
    pub codecs: Option<Vec<Codec>>,
    /// G.711 conversion between the legs (A side's law, B side's law).
    pub transcode: Option<Transcode>,
    /// What admitted the call (a trunk name); handed back to [`Router::ended`].
    pub label: String,
}

/// What became of a call, for its record: handed to [`Router::call_ended`] once per
/// INVITE the router admitted or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub call: u64,
    /// Leg A's Call-ID.
    pub call_id: String,
    /// The router's label (empty when the router refused the call).
    pub label: String,
    /// The user part of leg A's From (`anonymous` without one).
    pub calling: String,
    /// The user part of leg A's Request-URI.
    pub called: String,
    pub started_unix_ms: u64,
    pub answered_unix_ms: Option<u64>,
    pub ended_unix_ms: u64,
    /// The final status leg A got (200 when answered, 487 when it cancelled).
    pub status: u16,
    /// The caller gave up (CANCEL) before an answer.
    pub cancelled: bool,
    /// The [`Fork::party`] that answered (None when serial or unanswered).
    pub answered_by: Option<String>,
    /// The recordings of the call that recorders confirmed and kept to its end: the
    /// Call-ID of each recording session.
    pub recordings: Vec<String>,
}

/// What to record of an answered call, and where (SIPREC, RFC 7866): one recording
/// session to each recorder, in parallel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingPlan {
    pub recorders: Vec<SocketAddr>,
    pub metadata: super::siprec::RecordingMetadata,
}

/// Decides what happens to new calls.
pub trait Router {
    /// Routes a new INVITE from `source` whose offer carries `offered` codecs.
    fn route(
        &mut self,
        now: Instant,
        source: SocketAddr,
        invite: &Request,
        offered: &[Codec],
    ) -> Result<Outbound, RouteRefusal>;
    /// A call routed with `label` has ended (answered or not).
    fn ended(&mut self, label: &str);
    /// A call with `label` was taken over from a snapshot.
    fn restored(&mut self, _label: &str) {}
    /// A call is over (refused, unanswered or hung up): what became of it.
    fn call_ended(&mut self, _summary: &CallSummary) {}
    /// A call was answered: where to record it, if anywhere.
    fn recording(&mut self, _answered: &CallSummary) -> Option<RecordingPlan> {
        None
    }
}

/// Which leg of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The caller's leg (we are its UAS).
    A,
    /// The callee's leg (we are its UAC).
    B,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// An established call as plain data: what a standby needs to carry it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The core's call number (the media anchor's key too).
    pub call: u64,
    pub a_dialog: Dialog,
    pub b_dialog: Dialog,
    /// Where leg A's in-dialog requests go when the route set does not say.
    pub a_peer: SocketAddr,
    /// Where leg B's in-dialog requests go when the route set does not say.
    pub b_peer: SocketAddr,
    pub media: Option<MediaMapping>,
    pub label: String,
    /// When the call was answered (Unix milliseconds).
    pub answered_unix_ms: u64,
}

/// A change to the table of established calls.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A call was answered or changed (dialog CSeq, media).
    Upsert(Box<CallSnapshot>),
    /// A call ended.
    Remove(u64),
}

/// Core settings.
#[derive(Debug, Clone)]
pub struct B2buaConfig {
    /// Our SIP address: Via sent-by and Contact on both legs.
    pub local: SocketAddr,
    /// User part of our Contact.
    pub contact_user: String,
    /// Calls (ringing and established) at once; past this, new INVITEs get 503.
    pub max_calls: usize,
    /// Seconds in Retry-After when refusing for load.
    pub retry_after_secs: u32,
    /// New calls admitted per second (a window of one second); past it new INVITEs
    /// get 503 + Retry-After: 1 at once, so an overload sheds early instead of letting
    /// every call time out. `None`: no limit.
    pub max_calls_per_second: Option<u32>,
    /// An answered call whose relay has carried no packet (RTP or RTCP, either way)
    /// for this long is hung up on both legs, unless it is on hold; `None`: never.
    pub media_timeout: Option<Duration>,
    /// Each confirmed recording session gets an in-dialog OPTIONS this often; a
    /// recorder that has not answered the last one by the next (or answers 481) has
    /// lost the recording: its copy no longer counts and its media fork stops. `None`:
    /// recorders are not asked (one that dies unheard still counts).
    pub recording_keepalive: Option<Duration>,
    /// Queue every change to the table of established calls for
    /// [`B2bua::poll_change`] (an active/standby pair replicates them). Off, nothing is
    /// queued: a core nobody polls must not keep them.
    pub replicate: bool,
}

impl B2buaConfig {
    /// Settings for a B2BUA at `local`.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            contact_user: "b2bua".into(),
            max_calls: 10_000,
            retry_after_secs: 5,
            max_calls_per_second: None,
            media_timeout: None,
            recording_keepalive: None,
            replicate: false,
        }
    }
}

/// What the core has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct B2buaStats {
    pub calls_attempted: u64,
    pub calls_answered: u64,
    /// Calls refused by the core or the router (never sent on leg B).
    pub calls_refused: u64,
    /// Calls that ended without an answer (busy, cancelled, timed out…).
    pub calls_unanswered: u64,
    /// Answered calls that ended.
    pub calls_ended: u64,
    /// Calls taken over from snapshots.
    pub calls_restored: u64,
    /// Confirmed recordings their recorder lost during the call (no answer to the
    /// keepalive, or 481).
    pub recordings_lost: u64,
    /// Calls up now (ringing or established).
    pub calls_active: u64,
    /// Entries in the core's per-call tables (legs, pending transactions, recordings,
    /// remembered cancellations): back to (near) zero when idle, or something leaks.
    pub state_entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Leg B's INVITE is out, no dialog yet.
    Calling,
    /// Leg B answered 2xx; leg A has its 200.
    Answered,
}

#[derive(Debug)]
struct Call {
    id: u64,
    phase: Phase,
    label: String,
    cancelled: bool,
    a_peer: SocketAddr,
    a_call_id: CallIdValue,
    a_tag: Tag,
    /// Leg A's INVITE and its server transaction, until its final response.
    a_invite: Option<(TransactionId, Request)>,
    a_offer: Option<Session>,
    a_dialog: Option<Dialog>,
    outbound: Outbound,
    /// Destinations not tried yet (serial ringing).
    b_next: VecDeque<SocketAddr>,
    /// Leg B's INVITEs: one per destination tried in turn, or one per fork.
    branches: Vec<Branch>,
    /// The branch that answered.
    winner: Option<usize>,
    /// Where leg B's in-dialog requests go: the answering branch's destination.
    b_peer: SocketAddr,
    b_call_id: CallIdValue,
    b_tag: Tag,
    /// The answering branch's INVITE CSeq (its ACK's).
    b_cseq: u32,
    b_offer: Vec<u8>,
    b_dialog: Option<Dialog>,
    /// Our ACK for leg B's 2xx, resent on each retransmission of it.
    b_ack: Option<Vec<u8>>,
    media: Option<MediaMapping>,
    answered_unix_ms: u64,
    started_unix_ms: u64,
    calling: String,
    called: String,
    /// The final status leg A got.
    a_status: Option<u16>,
    /// The last SDP of the call put it on hold (not sendrecv): silence is expected.
    held: bool,
    /// A taken notice from the caller (a peer B2BUA) while branches still rang: each
    /// gets it once its INVITE is over.
    relayed_notice: Option<Vec<u8>>,
    /// Its recording sessions, one per recorder.
    recordings: Vec<Recording>,
    /// The client transactions of requests relayed within the call whose final
    /// response has not come yet (some may have ended since): what `end` answers 487.
    relayed: Vec<TransactionId>,
    /// Leg A's INVITE transaction while its 2xx waits for the ACK.
    awaiting_ack: Option<TransactionId>,
}

/// One recording session of a call (we are its SRC).
#[derive(Debug)]
struct Recording {
    recorder: SocketAddr,
    call_id: String,
    /// Our tag in the recording session (its `recording_legs` key with `call_id`).
    tag: Tag,
    /// The keepalive OPTIONS sent and not answered yet.
    probe: Option<TransactionId>,
    invite: Arc<Request>,
    tx: Option<TransactionId>,
    dialog: Option<Dialog>,
    state: RecordingState,
    /// Where the recorder wants (the caller's stream, the callee's).
    streams: RecorderStreams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordingState {
    Offered,
    Confirmed,
    /// Refused, timed out, or hung up by the recorder.
    Failed,
}

/// One INVITE of leg B.
#[derive(Debug)]
struct Branch {
    fork: Fork,
    cseq: u32,
    /// Its INVITE and client transaction once sent; kept after its final response so a
    /// late 2xx can still be ACKed and hung up.
    /// The INVITE sent on this branch, shared with its client transaction.
    invite: Option<(TransactionId, Arc<Request>)>,
    /// Its final status once it came (408 when it timed out).
    status: Option<u16>,
}

impl Branch {
    fn new(fork: Fork, cseq: u32) -> Self {
        Self {
            fork,
            cseq,
            invite: None,
            status: None,
        }
    }

    fn live(&self) -> bool {
        self.invite.is_some() && self.status.is_none()
    }
}

/// Of the final statuses of failed branches, the one leg A hears (RFC 3261 §16.7 in
/// spirit): a 6xx, else busy, else a definite refusal, else "not available".
fn best_failure(statuses: impl Iterator<Item = u16>) -> u16 {
    let rank = |s: u16| match s {
        600..=699 => 0,
        486 => 1,
        408 | 480 | 487 | 503 => 3,
        _ => 2,
    };
    statuses.min_by_key(|s| rank(*s)).unwrap_or(408)
}

impl Call {
    fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => self.a_dialog.as_mut(),
            Side::B => self.b_dialog.as_mut(),
        }
    }

    fn peer(&self, side: Side) -> SocketAddr {
        match side {
            Side::A => self.a_peer,
            Side::B => self.b_peer,
        }
    }

    fn snapshot(&self) -> Option<CallSnapshot> {
        Some(CallSnapshot {
            call: self.id,
            a_dialog: self.a_dialog.clone()?,
            b_dialog: self.b_dialog.clone()?,
            a_peer: self.a_peer,
            b_peer: self.b_peer,
            media: self.media.clone(),
            label: self.label.clone(),
            answered_unix_ms: self.answered_unix_ms,
        })
    }
}

/// Where a taken notice goes.
#[derive(Debug, Clone)]
struct Notice {
    destination: SocketAddr,
    request_uri: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
}

/// A call cancelled by its caller while it rang here, remembered a while: should the
/// caller (a peer B2BUA) send a taken notice, the branches rung here get it too.
#[derive(Debug)]
struct Cancelled {
    at: Instant,
    a_call_id: CallIdValue,
    a_peer: SocketAddr,
    notices: Vec<Notice>,
}

/// How long, and how many, cancelled calls are remembered for taken notices.
const CANCELLED_KEPT: Duration = Duration::from_secs(32);
const CANCELLED_MAX: usize = 4096;

/// What a client transaction of ours was for.
#[derive(Debug, Clone)]
enum Pending {
    /// A branch of leg B's initial INVITE.
    Invite { call: u64, branch: usize },
    /// A request relayed from `from`'s side; its answer goes to `server`.
    Relayed {
        call: u64,
        server: TransactionId,
        from: Side,
        method: Method,
        cseq: u32,
    },
    /// A request of our own (BYE); its answer concerns nobody.
    Own,
    /// A recording session's INVITE (kept to ACK and hang up a late answer).
    Recording {
        call: u64,
        index: usize,
        invite: Arc<Request>,
    },
    /// A keepalive OPTIONS in a recording session.
    Probe { call: u64, index: usize },
}

/// The B2BUA core; drive it as the [`TransactionUser`] of a transaction layer.
pub struct B2bua<R, M> {
    config: B2buaConfig,
    /// `config.local` and its IP as text, formatted once: they go in every Via,
    /// Contact and Call-ID this core writes.
    local_text: String,
    local_host: String,
    policy: UasPolicy,
    router: R,
    media: M,
    next_call: u64,
    /// Boxed: a call is a couple of kilobytes, and the table moves its values
    /// whenever it grows or gives room back.
    calls: FastMap<u64, Box<Call>>,
    /// (Call-ID, our tag) of each leg → call and side.
    legs: FastMap<(CallIdValue, Tag), (u64, Side)>,
    /// Leg A INVITE server transactions still unanswered → call.
    a_invites: FastMap<TransactionId, u64>,
    /// Leg A INVITEs answered 2xx whose ACK has not come → call.
    awaiting_ack: FastMap<TransactionId, u64>,
    client: FastMap<TransactionId, Pending>,
    changes: VecDeque<Change>,
    stats: B2buaStats,
    /// When answered calls' media is checked next (with a media timeout set).
    next_media_check: Option<Instant>,
    /// When each confirmed recording is next asked whether its recorder still has it:
    /// (due, call, recording index), in due order (one interval for all).
    recording_probes: VecDeque<(Instant, u64, usize)>,
    /// Forked calls their caller cancelled, newest last.
    recently_cancelled: VecDeque<Cancelled>,
    /// (Call-ID, our tag) of each recording session → call and its index.
    recording_legs: FastMap<(CallIdValue, Tag), (u64, usize)>,
    /// The current one-second admission window and the calls admitted in it.
    admission: Option<(Instant, u32)>,
    shrink_pace: crate::util::ShrinkPace,
}

/// Names the [`Fork::party`] that answered, on the 2xx to leg A; read back from a
/// branch's 2xx, so a call forked through a peer B2BUA names who answered there.
pub const ANSWERED_BY: &str = "X-Floorwire-Answered-By";

/// How often answered calls' media is checked (at most) for the media timeout.
const MEDIA_CHECK: Duration = Duration::from_secs(1);

/// How far a restored dialog's CSeq jumps over the replicated one.
const CSEQ_MARGIN: u32 = 100;

/// Recording `index` of `call`, if both are still there.
fn recording_mut(
    calls: &mut FastMap<u64, Box<Call>>,
    call: u64,
    index: usize,
) -> Option<&mut Recording> {
    calls.get_mut(&call)?.recordings.get_mut(index)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where an in-dialog request goes: the first route's host if it is an address, else
/// the leg's peer (the address the leg's signalling came from or went to).
fn next_hop(dialog: &Dialog, peer: SocketAddr) -> SocketAddr {
    dialog
        .route_set
        .first()
        .and_then(|route| parse_name_addr(route).ok().and_then(|n| uri_address(n.uri)))
        .unwrap_or(peer)
}

/// The host:port of a SIP URI when the host is an IP address (port 5060 by default).
fn uri_address(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next()?;
    if let Ok(address) = hostport.parse::<SocketAddr>() {
        return Some(address);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

/// Where an SDP says media should go, unless it is on hold with an unspecified address.
fn endpoint_of(session: &Session) -> Option<SocketAddr> {
    sdp::audio_endpoint(session).filter(|a| !a.ip().is_unspecified())
}

/// A dialog-forming response of ours to leg A, written for the wire: Record-Route
/// copied from the request (§12.1.1), our Contact, `extra` (the party who answered,
/// say), and the SDP if any.
fn dialog_response(
    request: &Request,
    status: u16,
    tag: &Tag,
    contact: &Header,
    extra: Option<&Header>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut headers: Vec<&Header> = request
        .headers
        .iter()
        .filter(|h| matches!(h, Header::RecordRoute(_)))
        .collect();
    headers.push(contact);
    headers.extend(extra);
    response_wire(
        request,
        status,
        Some(tag),
        &headers,
        body.map(|b| ("application/sdp", b)),
    )
}

/// The methods the B2BUA handles, for `Allow`.
fn allow() -> Header {
    Header::Allow(
        "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
            .to_owned()
            .into(),
    )
}

/// What became of `c`, ended at `ended_unix_ms` (0 while it is up).
fn summary_of(c: &Call, ended_unix_ms: u64) -> CallSummary {
    CallSummary {
        call: c.id,
        call_id: c.a_call_id.as_str().to_owned(),
        label: c.label.clone(),
        calling: c.calling.clone(),
        called: c.called.clone(),
        started_unix_ms: c.started_unix_ms,
        answered_unix_ms: (c.phase == Phase::Answered).then_some(c.answered_unix_ms),
        ended_unix_ms,
        status: c.a_status.unwrap_or(if c.cancelled { 487 } else { 500 }),
        cancelled: c.cancelled,
        answered_by: c
            .winner
            .and_then(|w| c.branches.get(w))
            .map(|b| b.fork.party.clone())
            .filter(|p| !p.is_empty()),
        recordings: c
            .recordings
            .iter()
            .filter(|r| r.state == RecordingState::Confirmed)
            .map(|r| r.call_id.clone())
            .collect(),
    }
}

/// The calling number (From's user part, `anonymous` without one) and the called one
/// (the Request-URI's user part) of a new INVITE.
fn numbers_of(request: &Request) -> (String, String) {
    let calling = request
        .headers
        .iter()
        .find_map(|h| match h {
            Header::From(f) => name_addr_user(f.value()).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_else(|| "anonymous".into());
    let called = sip_uri_user(&request.uri).unwrap_or_default();
    (calling, called)
}

fn content_type(request: &Request) -> Option<String> {
    request.headers.iter().find_map(|h| match h {
        Header::ContentType(c) => Some(c.value().to_owned()),
        _ => None,
    })
}

fn law_of(codec: Codec) -> Option<Law> {
    match codec {
        Codec::Pcma => Some(Law::ALaw),
        Codec::Pcmu => Some(Law::MuLaw),
        _ => None,
    }
}

fn codec_of(law: Law) -> Codec {
    match law {
        Law::ALaw => Codec::Pcma,
        Law::MuLaw => Codec::Pcmu,
    }
}

impl<R, M> std::fmt::Debug for B2bua<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("B2bua")
            .field("local", &self.config.local)
            .field("calls", &self.calls.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: Router, M: MediaAnchor> B2bua<R, M> {
    /// A core with its router and media plane.
    pub fn new(config: B2buaConfig, router: R, media: M) -> Self {
        Self {
            local_text: config.local.to_string(),
            local_host: config.local.ip().to_string(),
            config,
            policy: UasPolicy::default(),
            router,
            media,
            next_call: rand::random::<u32>() as u64,
            calls: FastMap::default(),
            legs: FastMap::default(),
            a_invites: FastMap::default(),
            awaiting_ack: FastMap::default(),
            client: FastMap::default(),
            changes: VecDeque::new(),
            stats: B2buaStats::default(),
            next_media_check: None,
            recording_probes: VecDeque::new(),
            recently_cancelled: VecDeque::new(),
            recording_legs: FastMap::default(),
            admission: None,
            shrink_pace: Default::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> B2buaStats {
        let mut stats = self.stats;
        stats.calls_active = self.calls.len() as u64;
        stats.state_entries = (self.calls.len()
            + self.legs.len()
            + self.a_invites.len()
            + self.awaiting_ack.len()
            + self.client.len()
            + self.recording_legs.len()
            + self.recently_cancelled.len()
            + self.changes.len()) as u64;
        stats
    }

    /// The router (to reload its rules, read its state).
    pub fn router_mut(&mut self) -> &mut R {
        &mut self.router
    }

    /// The media plane.
    pub fn media(&self) -> &M {
        &self.media
    }

    /// The next change to the table of established calls.
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// Every established call now (for a standby that has just connected).
    pub fn snapshots(&self) -> Vec<CallSnapshot> {
        self.calls.values().filter_map(|c| c.snapshot()).collect()
    }

    /// Takes over an established call from a snapshot: its dialogs answer in-dialog
    /// requests from now on and its media is relayed on the same ports.
    pub fn restore(&mut self, mut snapshot: CallSnapshot) -> Result<(), Error> {
        // The active may have sent a request after its last replicated change: start
        // our CSeqs well above what it used.
        snapshot.a_dialog.local_seq = snapshot.a_dialog.local_seq.wrapping_add(CSEQ_MARGIN);
        snapshot.b_dialog.local_seq = snapshot.b_dialog.local_seq.wrapping_add(CSEQ_MARGIN);
        if let Some(mapping) = &snapshot.media {
            self.media.restore(snapshot.call, mapping)?;
        }
        let a = &snapshot.a_dialog.id;
        let b = &snapshot.b_dialog.id;
        self.legs.insert(
            (a.call_id.clone(), a.local_tag.clone()),
            (snapshot.call, Side::A),
        );
        self.legs.insert(
            (b.call_id.clone(), b.local_tag.clone()),
            (snapshot.call, Side::B),
        );
        self.router.restored(&snapshot.label);
        self.stats.calls_restored += 1;
        self.next_call = self.next_call.max(snapshot.call + 1);
        let call = Call {
            id: snapshot.call,
            phase: Phase::Answered,
            label: snapshot.label,
            cancelled: false,
            a_peer: snapshot.a_peer,
            a_call_id: snapshot.a_dialog.id.call_id.clone(),
            a_tag: snapshot.a_dialog.id.local_tag.clone(),
            a_invite: None,
            a_offer: None,
            outbound: Outbound {
                destinations: vec![snapshot.b_peer],
                request_uri: String::new(),
                forks: Vec::new(),
                taken_notice: None,
                from: String::new(),
                to: String::new(),
                headers: Vec::new(),
                codecs: None,
                transcode: snapshot.media.as_ref().and_then(|m| m.transcode),
                label: String::new(),
            },
            b_next: VecDeque::new(),
            b_peer: snapshot.b_peer,
            b_call_id: snapshot.b_dialog.id.call_id.clone(),
            b_tag: snapshot.b_dialog.id.local_tag.clone(),
            b_cseq: snapshot.b_dialog.local_seq,
            b_offer: Vec::new(),
            branches: Vec::new(),
            winner: None,
            b_dialog: Some(snapshot.b_dialog),
            a_dialog: Some(snapshot.a_dialog),
            b_ack: None,
            media: snapshot.media,
            answered_unix_ms: snapshot.answered_unix_ms,
            started_unix_ms: snapshot.answered_unix_ms,
            calling: String::new(),
            called: String::new(),
            a_status: Some(200),
            held: false,
            relayed_notice: None,
            recordings: Vec::new(),
            relayed: Vec::new(),
            awaiting_ack: None,
        };
        tracing::info!(call = call.id, "call taken over from the replicated table");
        self.calls.insert(call.id, Box::new(call));
        Ok(())
    }

    fn contact(&self) -> Header {
        Header::Contact(format!("<sip:{}@{}>", self.config.contact_user, self.local_text).into())
    }

    /// Gives back the room a burst left in the call tables, paced
    /// ([`crate::util::ShrinkPace`]: a check put off comes back through `on_timer`).
    fn shrink_tables(&mut self, now: Instant) {
        if self.shrink_pace.due(now, self.calls.is_empty()) {
            crate::util::shrink_map(&mut self.calls);
            crate::util::shrink_map(&mut self.legs);
            crate::util::shrink_map(&mut self.client);
        }
    }

    fn changed(&mut self, call: u64) {
        if !self.config.replicate {
            return;
        }
        if let Some(snapshot) = self.calls.get(&call).and_then(|c| c.snapshot()) {
            self.changes.push_back(Change::Upsert(Box::new(snapshot)));
        }
    }

    /// Ends a call: media released, router told, indices cleared; requests still being
    /// relayed for it are answered 487 (§15.1.2), so their transactions end too.
    fn end(&mut self, now: Instant, layer: &mut TransactionLayer, call: u64, why: &str) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        self.media.close(call);
        self.router.ended(&c.label);
        self.router.call_ended(&summary_of(&c, unix_ms()));
        let mut c = c;
        self.stop_recordings(now, layer, &mut c);
        self.legs.remove(&(c.b_call_id.clone(), c.b_tag.clone()));
        self.legs.remove(&(c.a_call_id.clone(), c.a_tag.clone()));
        if let Some((tx, _)) = &c.a_invite {
            self.a_invites.remove(tx);
        }
        if let Some(tx) = c.awaiting_ack {
            self.awaiting_ack.remove(&tx);
        }
        // The call's own client transactions are let go of by their ids, not by a
        // search of every call's (a table as large as the calls up).
        let mut unanswered = Vec::new();
        for tx in c
            .branches
            .iter()
            .filter_map(|b| b.invite.as_ref().map(|(tx, _)| *tx))
        {
            if matches!(self.client.get(&tx), Some(Pending::Invite { call: x, .. }) if *x == call) {
                self.client.remove(&tx);
            }
        }
        for tx in &c.relayed {
            if let Some(Pending::Relayed { server, .. }) = self.client.remove(tx) {
                unanswered.push(server);
            }
        }
        // A recording's INVITE still unanswered outlives the call: a late answer is
        // hung up.
        for tx in c
            .recordings
            .iter()
            .filter(|r| r.state != RecordingState::Offered)
            .filter_map(|r| r.tx)
            .chain(c.recordings.iter().filter_map(|r| r.probe))
        {
            self.client.remove(&tx);
        }
        for server in unanswered {
            let _ = layer.respond_from_head(now, server, 487, None, &[], None);
        }
        if c.cancelled && c.winner.is_none() && !c.outbound.forks.is_empty() {
            let notices = c
                .branches
                .iter()
                .filter(|b| b.invite.is_some())
                .map(|b| Self::notice_for(&c, b))
                .collect();
            while self.recently_cancelled.len() >= CANCELLED_MAX
                || self
                    .recently_cancelled
                    .front()
                    .is_some_and(|r| now.duration_since(r.at) > CANCELLED_KEPT)
            {
                self.recently_cancelled.pop_front();
            }
            self.recently_cancelled.push_back(Cancelled {
                at: now,
                a_call_id: c.a_call_id.clone(),
                a_peer: c.a_peer,
                notices,
            });
        }
        self.shrink_tables(now);
        if c.phase == Phase::Answered {
            self.stats.calls_ended += 1;
            if self.config.replicate {
                self.changes.push_back(Change::Remove(call));
            }
        } else {
            self.stats.calls_unanswered += 1;
        }
        tracing::info!(call, label = %c.label, why, "call ended");
    }

    /// Opens one recording session per recorder of `plan` (RFC 7866), in parallel; the
    /// media is forked to each once it answers.
    fn start_recordings(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        plan: RecordingPlan,
    ) {
        let Some(mapping) = self.calls.get(&call).and_then(|c| c.media.clone()) else {
            return;
        };
        let ids = siprec::RecordingIds::generate();
        let xml = siprec::metadata_xml(&plan.metadata, &ids);
        // What the caller sends leaves through leg B's socket, the callee's through A's.
        let offer = siprec::offer_sdp(
            mapping.b_local,
            mapping.a_local,
            rand::random::<u32>() as u64,
        );
        let (content_type, body) = siprec::invite_body(&offer, &xml);
        let local = self.config.local;
        let user = self.config.contact_user.clone();
        let mut recordings = Vec::new();
        for recorder in plan.recorders {
            let call_id = CallIdValue::generate(&self.local_host).as_str().to_owned();
            let tag = Tag::generate();
            let mut headers = self.request_headers(
                70,
                &format!("<sip:{user}@{local}>;tag={}", tag.as_str()),
                &format!("<sip:srs@{recorder}>"),
                &call_id,
                1,
                Method::Invite,
            );
            headers.push(Header::Contact(
                format!("<sip:{user}@{local}>;+sip.src").into(),
            ));
            headers.push(Header::Other("Require".into(), "siprec".into()));
            headers.push(allow());
            let Ok(uri) = Uri::try_from(format!("sip:srs@{recorder}").as_str()) else {
                continue;
            };
            let invite = Arc::new(request_with_body(
                Request {
                    method: Method::Invite,
                    uri,
                    version: Version::V2,
                    headers,
                    body: Vec::new(),
                },
                &content_type,
                body.clone(),
            ));
            let index = recordings.len();
            let sent = layer.send_request(now, recorder, invite.clone());
            let (tx, state) = match sent {
                Ok(tx) => {
                    self.client.insert(
                        tx,
                        Pending::Recording {
                            call,
                            index,
                            invite: invite.clone(),
                        },
                    );
                    self.recording_legs.insert(
                        (CallIdValue::new(call_id.as_str()), tag.clone()),
                        (call, index),
                    );
                    (Some(tx), RecordingState::Offered)
                }
                Err(e) => {
                    tracing::warn!(%recorder, error = %e, "recording not offered");
                    (None, RecordingState::Failed)
                }
            };
            tracing::info!(call, %recorder, recording = %call_id, "recording offered");
            recordings.push(Recording {
                recorder,
                call_id,
                tag,
                probe: None,
                invite,
                tx,
                dialog: None,
                state,
                streams: (None, None),
            });
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.recordings = recordings;
        }
    }

    /// Hangs up answered calls whose media went silent (not on hold) for the timeout.
    fn check_media(&mut self, now: Instant, layer: &mut TransactionLayer) {
        let Some(timeout) = self.config.media_timeout else {
            self.next_media_check = None;
            return;
        };
        let answered: Vec<u64> = self
            .calls
            .values()
            .filter(|c| c.phase == Phase::Answered)
            .map(|c| c.id)
            .collect();
        for call in &answered {
            let silent = self
                .calls
                .get(call)
                .is_some_and(|c| !c.held && self.media.idle(*call).is_some_and(|i| i >= timeout));
            if silent {
                tracing::info!(call, ?timeout, "no media: hanging the call up");
                self.send_bye(now, layer, *call, Side::A);
                self.send_bye(now, layer, *call, Side::B);
                self.end(now, layer, *call, "no media");
            }
        }
        self.next_media_check = self
            .calls
            .values()
            .any(|c| c.phase == Phase::Answered)
            .then(|| now + timeout.min(MEDIA_CHECK));
    }

    /// Sends the keepalive OPTIONS of every confirmed recording that is due; one whose
    /// last OPTIONS is still unanswered has been lost by its recorder.
    fn probe_recordings(&mut self, now: Instant, layer: &mut TransactionLayer) {
        let Some(every) = self.config.recording_keepalive else {
            self.recording_probes.clear();
            return;
        };
        let local = self.local_text.clone();
        while let Some(&(at, call, index)) = self.recording_probes.front() {
            if at > now {
                break;
            }
            self.recording_probes.pop_front();
            let Some(r) = recording_mut(&mut self.calls, call, index)
                .filter(|r| r.state == RecordingState::Confirmed)
            else {
                continue;
            };
            if let Some(tx) = r.probe.take()
                && self.client.remove(&tx).is_some()
            {
                self.recording_lost(call, index, "no answer to the keepalive OPTIONS");
                continue;
            }
            let recorder = r.recorder;
            if let Some(dialog) = r.dialog.as_mut()
                && let Ok(options) = dialog.request(Method::Options, &local, None)
                && let Ok(tx) = layer.send_request(now, next_hop(dialog, recorder), options)
            {
                self.client.insert(tx, Pending::Probe { call, index });
                r.probe = Some(tx);
            }
            self.recording_probes.push_back((now + every, call, index));
        }
    }

    /// A confirmed recording that its recorder no longer has: its copy no longer
    /// counts, and the media stops going there.
    fn recording_lost(&mut self, call: u64, index: usize, why: &str) {
        let Some(r) = recording_mut(&mut self.calls, call, index)
            .filter(|r| r.state == RecordingState::Confirmed)
        else {
            return;
        };
        r.state = RecordingState::Failed;
        r.probe = None;
        tracing::warn!(call, recorder = %r.recorder, recording = %r.call_id, why, "recording lost");
        self.stats.recordings_lost += 1;
        self.fork_media_to_recorders(call);
    }

    /// Tells the media plane where the call's confirmed recordings want its streams.
    fn fork_media_to_recorders(&mut self, call: u64) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let streams: Vec<_> = c
            .recordings
            .iter()
            .filter(|r| r.state == RecordingState::Confirmed)
            .map(|r| r.streams)
            .collect();
        self.media.record(call, &streams);
    }

    /// A recorder answered a recording session's INVITE.
    fn on_recording_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        index: usize,
        invite: &Request,
        response: Response,
    ) {
        let status = response.status_code.code();
        if status < 200 {
            return;
        }
        let local = self.local_text.clone();
        let Some(r) = recording_mut(&mut self.calls, call, index) else {
            // The call ended before the recorder answered: hang a late answer up.
            if (200..300).contains(&status)
                && let Some(recorder) = uri_address(&invite.uri.to_string())
                && let Ok(mut late) = Dialog::from_uac(invite, &response)
            {
                let hop = next_hop(&late, recorder);
                if let Ok(ack) = late.ack_wire(1, &local) {
                    let _ = layer.send_stateless(hop, ack);
                }
                if let Ok(bye) = late.request(Method::Bye, &local, None)
                    && let Ok(tx) = layer.send_request(now, hop, bye)
                {
                    self.client.insert(tx, Pending::Own);
                }
            }
            return;
        };
        if !(200..300).contains(&status) {
            r.state = RecordingState::Failed;
            tracing::warn!(call, recorder = %r.recorder, status, "recorder refused the recording");
            return;
        }
        if let Some(dialog) = &mut r.dialog {
            // A retransmitted 2xx: our ACK got lost.
            if let Ok(ack) = dialog.ack_wire(1, &local) {
                let _ = layer.send_stateless(next_hop(dialog, r.recorder), ack);
            }
            return;
        }
        let Ok(dialog) = Dialog::from_uac(&r.invite, &response) else {
            r.state = RecordingState::Failed;
            tracing::warn!(call, recorder = %r.recorder, "recorder's 2xx unusable");
            return;
        };
        if let Ok(ack) = dialog.ack_wire(1, &local) {
            let _ = layer.send_stateless(next_hop(&dialog, r.recorder), ack);
        }
        let streams = sdp::parse(&response.body)
            .map_err(|e| e.to_string())
            .and_then(|answer| siprec::answer_streams(&answer).map_err(|e| e.to_string()));
        r.dialog = Some(dialog);
        match streams {
            Ok(streams) => {
                r.state = RecordingState::Confirmed;
                r.streams = streams;
                tracing::info!(call, recorder = %r.recorder, recording = %r.call_id, "recording confirmed");
                if let Some(every) = self.config.recording_keepalive {
                    self.recording_probes.push_back((now + every, call, index));
                }
                self.fork_media_to_recorders(call);
            }
            Err(e) => {
                r.state = RecordingState::Failed;
                tracing::warn!(call, recorder = %r.recorder, error = %e, "recorder's answer unusable: hanging it up");
                let recorder = r.recorder;
                if let Some(dialog) = r.dialog.as_mut()
                    && let Ok(bye) = dialog.request(Method::Bye, &local, None)
                    && let Ok(tx) = layer.send_request(now, next_hop(dialog, recorder), bye)
                {
                    self.client.insert(tx, Pending::Own);
                }
            }
        }
    }

    /// The call ends: BYE to every recorder that took it, CANCEL to those still
    /// deciding.
    fn stop_recordings(&mut self, now: Instant, layer: &mut TransactionLayer, c: &mut Call) {
        let local = self.local_text.clone();
        for r in &mut c.recordings {
            self.recording_legs
                .remove(&(CallIdValue::new(r.call_id.as_str()), r.tag.clone()));
            match r.state {
                RecordingState::Confirmed => {
                    let recorder = r.recorder;
                    if let Some(dialog) = r.dialog.as_mut()
                        && let Ok(bye) = dialog.request(Method::Bye, &local, None)
                        && let Ok(tx) = layer.send_request(now, next_hop(dialog, recorder), bye)
                    {
                        self.client.insert(tx, Pending::Own);
                    }
                }
                RecordingState::Offered => {
                    if let Some(tx) = r.tx {
                        let _ = layer.cancel(now, tx);
                    }
                }
                RecordingState::Failed => {}
            }
        }
    }

    /// A request from a recorder within its recording session: BYE ends that
    /// recording (the call goes on); anything else is answered without effect.
    fn recording_request(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: TransactionId,
        request: &Request,
        call: u64,
        index: usize,
    ) {
        let status = match request.method {
            Method::Bye => {
                if let Some(r) = recording_mut(&mut self.calls, call, index) {
                    r.state = RecordingState::Failed;
                    tracing::warn!(call, recorder = %r.recorder, "recorder hung up the recording");
                }
                self.fork_media_to_recorders(call);
                200
            }
            Method::Invite => 488,
            _ => 200,
        };
        let _ = layer.respond_to(now, id, request, status, None);
    }

    /// Sends BYE on `side` of `call`, if that leg has a dialog.
    fn send_bye(&mut self, now: Instant, layer: &mut TransactionLayer, call: u64, side: Side) {
        let local = self.local_text.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let peer = c.peer(side);
        let Some(dialog) = c.dialog_mut(side) else {
            return;
        };
        match dialog.request_wire(Method::Bye, &local) {
            Ok((bye, branch)) => {
                let hop = next_hop(dialog, peer);
                match layer.send_request_wire(now, hop, Method::Bye, branch, bye) {
                    Ok(tx) => {
                        self.client.insert(tx, Pending::Own);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not send BYE"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not build BYE"),
        }
    }

    fn refuse(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: TransactionId,
        request: &Request,
        refusal: &RouteRefusal,
    ) {
        self.stats.calls_refused += 1;
        tracing::info!(status = refusal.status, reason = %refusal.reason, "call refused");
        let mut response = response_to(request, refusal.status, Some(&Tag::generate()));
        if let Some(secs) = refusal.retry_after {
            response = with_header(
                response,
                Header::RetryAfter(RetryAfter::new(secs.to_string())),
            );
        }
        let text = refusal.reason.replace(['"', '\\', '\r', '\n'], " ");
        response = with_header(
            response,
            Header::Other(
                "Warning".into(),
                format!("399 {} \"{text}\"", self.config.local.ip()),
            ),
        );
        let _ = layer.respond(now, id, response);
    }

    /// Tells the router a call it routed (or refused) was refused with `status`.
    fn summarise_refusal(&mut self, request: &Request, status: u16) {
        let when = unix_ms();
        let (calling, called) = numbers_of(request);
        self.router.call_ended(&CallSummary {
            call: 0,
            call_id: MessageIds::of(request)
                .call_id
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            label: String::new(),
            calling,
            called,
            started_unix_ms: when,
            answered_unix_ms: None,
            ended_unix_ms: when,
            status,
            cancelled: false,
            answered_by: None,
            recordings: Vec::new(),
        });
    }

    fn new_call(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: TransactionId,
        source: SocketAddr,
        request: Request,
        ids: &MessageIds,
    ) {
        self.stats.calls_attempted += 1;
        let tag = Tag::generate();
        let check = check_request(&request, &self.policy)
            .and_then(|()| check_proxy_request(&request, &self.policy.extensions));
        let max_forwards = match check {
            Ok(n) => n,
            Err(refusal) => {
                self.stats.calls_refused += 1;
                let _ = layer.respond(now, id, refusal.response(&request, &tag));
                return;
            }
        };
        if self.calls.len() >= self.config.max_calls {
            let refusal = RouteRefusal {
                status: 503,
                reason: format!("{} calls up, the limit", self.calls.len()),
                retry_after: Some(self.config.retry_after_secs),
            };
            return self.refuse(now, layer, id, &request, &refusal);
        }
        if let Some(limit) = self.config.max_calls_per_second {
            let (start, admitted) = match self.admission {
                Some((start, n)) if now.duration_since(start) < Duration::from_secs(1) => {
                    (start, n)
                }
                _ => (now, 0),
            };
            if admitted >= limit {
                self.admission = Some((start, admitted));
                let refusal = RouteRefusal {
                    status: 503,
                    reason: format!("{limit} new calls this second, the limit"),
                    retry_after: Some(1),
                };
                return self.refuse(now, layer, id, &request, &refusal);
            }
            self.admission = Some((start, admitted + 1));
        }
        let offer = if request.body.is_empty() {
            None
        } else {
            match sdp::parse(&request.body) {
                Ok(offer) => Some(offer),
                Err(e) => {
                    let refusal = RouteRefusal {
                        status: 488,
                        reason: format!("offer refused: {e}"),
                        retry_after: None,
                    };
                    return self.refuse(now, layer, id, &request, &refusal);
                }
            }
        };
        let Some(mut offer) = offer else {
            let refusal = RouteRefusal {
                status: 488,
                reason: "an INVITE without an SDP offer is not supported".into(),
                retry_after: None,
            };
            return self.refuse(now, layer, id, &request, &refusal);
        };
        let offered: Vec<Codec> = offer
            .medias
            .iter()
            .find(|m| m.media == "audio" && m.port != 0)
            .map(|m| sdp::payloads(m).into_iter().map(|p| p.codec).collect())
            .unwrap_or_default();
        let outbound = match self.router.route(now, source, &request, &offered) {
            Ok(outbound) if !outbound.destinations.is_empty() || !outbound.forks.is_empty() => {
                outbound
            }
            Ok(outbound) => {
                self.router.ended(&outbound.label);
                self.summarise_refusal(&request, 404);
                let refusal = RouteRefusal {
                    status: 404,
                    reason: "no destination".into(),
                    retry_after: None,
                };
                return self.refuse(now, layer, id, &request, &refusal);
            }
            Err(refusal) => {
                self.summarise_refusal(&request, refusal.status);
                return self.refuse(now, layer, id, &request, &refusal);
            }
        };
        let call = self.next_call;
        self.next_call += 1;
        let (a_local, b_local) = match self.media.open(call) {
            Ok(local) => local,
            Err(e) => {
                self.router.ended(&outbound.label);
                self.summarise_refusal(&request, 503);
                let refusal = RouteRefusal {
                    status: 503,
                    reason: format!("media: {e}"),
                    retry_after: Some(self.config.retry_after_secs),
                };
                return self.refuse(now, layer, id, &request, &refusal);
            }
        };
        let b_offer = match &outbound.codecs {
            Some(codecs) => {
                sdp::to_bytes(&sdp::offer(codecs, b_local, rand::random::<u32>() as u64))
            }
            None => sdp::anchored_bytes(&mut offer, b_local),
        };
        let mapping = MediaMapping {
            a_local,
            b_local,
            a_remote: endpoint_of(&offer),
            b_remote: None,
            transcode: outbound.transcode,
        };
        self.media.update(call, &mapping);
        let a_call_id = ids.call_id.clone().unwrap_or_else(|| CallIdValue::new(""));
        let (calling, called) = numbers_of(&request);
        let (branches, b_next): (Vec<Branch>, VecDeque<SocketAddr>) = if outbound.forks.is_empty() {
            let mut destinations: VecDeque<SocketAddr> =
                outbound.destinations.iter().copied().collect();
            let first = destinations.pop_front().unwrap_or(source);
            let fork = Fork {
                destination: first,
                request_uri: outbound.request_uri.clone(),
                headers: Vec::new(),
                party: String::new(),
            };
            (vec![Branch::new(fork, 1)], destinations)
        } else {
            let forks = outbound.forks.iter().cloned();
            (forks.map(|f| Branch::new(f, 1)).collect(), VecDeque::new())
        };
        let mut c = Call {
            id: call,
            phase: Phase::Calling,
            label: outbound.label.clone(),
            cancelled: false,
            a_peer: source,
            a_call_id: a_call_id.clone(),
            a_tag: tag.clone(),
            a_invite: Some((id, request)),
            a_offer: Some(offer),
            a_dialog: None,
            outbound,
            b_next,
            b_peer: branches[0].fork.destination,
            branches,
            winner: None,
            b_call_id: CallIdValue::generate(&self.local_host),
            b_tag: Tag::generate(),
            b_cseq: 1,
            b_offer,
            b_dialog: None,
            b_ack: None,
            media: Some(mapping),
            answered_unix_ms: 0,
            started_unix_ms: unix_ms(),
            calling,
            called,
            a_status: None,
            held: false,
            relayed_notice: None,
            recordings: Vec::new(),
            relayed: Vec::new(),
            awaiting_ack: None,
        };
        self.legs.insert((a_call_id, tag.clone()), (call, Side::A));
        self.legs
            .insert((c.b_call_id.clone(), c.b_tag.clone()), (call, Side::B));
        self.a_invites.insert(id, call);
        let mut sent = 0;
        for branch in 0..c.branches.len() {
            match self.send_b_invite(now, layer, &mut c, branch, max_forwards) {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::warn!(error = %e, party = %c.branches[branch].fork.party, "could not send leg B's INVITE");
                    c.branches[branch].status = Some(500);
                }
            }
        }
        self.calls.insert(call, Box::new(c));
        if sent == 0 {
            self.fail_a(now, layer, call, 500);
        }
    }

    /// Sends `branch` of leg B's INVITE.
    fn send_b_invite(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        c: &mut Call,
        branch: usize,
        max_forwards: u32,
    ) -> Result<(), Error> {
        let b = &c.branches[branch];
        let uri = Uri::try_from(b.fork.request_uri.as_str())
            .map_err(|e| Error::Dialog(format!("request URI {:?}: {e}", b.fork.request_uri)))?;
        let mut headers = self.request_headers(
            max_forwards,
            &format!("{};tag={}", c.outbound.from, c.b_tag.as_str()),
            &c.outbound.to,
            c.b_call_id.as_str(),
            b.cseq,
            Method::Invite,
        );
        headers.push(self.contact());
        headers.push(allow());
        for (name, value) in c.outbound.headers.iter().chain(&b.fork.headers) {
            headers.push(Header::Other(name.clone(), value.clone()));
        }
        let invite = Arc::new(request_with_body(
            Request {
                method: Method::Invite,
                uri,
                version: Version::V2,
                headers,
                body: Vec::new(),
            },
            "application/sdp",
            c.b_offer.clone(),
        ));
        let tx = layer.send_request(now, b.fork.destination, invite.clone())?;
        self.client
            .insert(tx, Pending::Invite { call: c.id, branch });
        c.branches[branch].invite = Some((tx, invite));
        Ok(())
    }

    /// Via, Max-Forwards, From, To, Call-ID and CSeq of a request of ours outside a
    /// dialog.
    fn request_headers(
        &self,
        max_forwards: u32,
        from: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
        method: Method,
    ) -> Headers {
        let mut headers = crate::sip::framing::headers_with_room();
        headers.push(Header::Via(Via::new(format!(
            "SIP/2.0/UDP {};branch={};rport",
            self.local_text,
            ViaBranch::generate()
        ))));
        headers.push(Header::MaxForwards(MaxForwards::new(
            max_forwards.to_string(),
        )));
        headers.push(Header::From(From::new(from.to_owned())));
        headers.push(Header::To(To::new(to.to_owned())));
        headers.push(Header::CallId(CallId::new(call_id.to_owned())));
        headers.push(Header::CSeq(CSeq::new(format!("{cseq} {method}"))));
        headers
    }

    /// Where a taken notice for `branch` of `c` goes: out of any dialog, but on the
    /// Call-ID and From of the INVITE it was offered, so the turret ties it to the call.
    fn notice_for(c: &Call, branch: &Branch) -> Notice {
        Notice {
            destination: branch.fork.destination,
            request_uri: branch.fork.request_uri.clone(),
            from: format!("{};tag={}", c.outbound.from, c.b_tag.as_str()),
            to: c.outbound.to.clone(),
            call_id: c.b_call_id.as_str().to_owned(),
            cseq: branch.cseq + 1,
        }
    }

    /// Sends one taken notice (a MESSAGE, RFC 3428, `text/plain`).
    fn send_notice(&mut self, now: Instant, layer: &mut TransactionLayer, n: &Notice, body: &[u8]) {
        let Ok(uri) = Uri::try_from(n.request_uri.as_str()) else {
            return;
        };
        let headers = self.request_headers(70, &n.from, &n.to, &n.call_id, n.cseq, Method::Message);
        let message = Request {
            method: Method::Message,
            uri,
            version: Version::V2,
            headers,
            body: Vec::new(),
        };
        let message = request_with_body(message, "text/plain", body.to_vec());
        match layer.send_request(now, n.destination, message) {
            Ok(tx) => {
                self.client.insert(tx, Pending::Own);
            }
            Err(e) => {
                tracing::warn!(error = %e, destination = %n.destination, "taken notice not sent")
            }
        }
    }

    /// Tells `branch`, cancelled because another answered, who took the call, when the
    /// router asked for it.
    fn send_taken_notice(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        branch: usize,
    ) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (Some(line), Some(winner)) = (&c.outbound.taken_notice, c.winner) else {
            return;
        };
        let (Some(b), Some(w)) = (c.branches.get(branch), c.branches.get(winner)) else {
            return;
        };
        let body = format!("line: {line}\r\nanswered-by: {}\r\n", w.fork.party);
        let notice = Self::notice_for(c, b);
        self.send_notice(now, layer, &notice, body.as_bytes());
    }

    /// A taken notice for a call that was cancelled here (its caller is a B2BUA that
    /// forked to us and another branch of its won): passed on to every branch rung.
    /// False when no recently cancelled call of `source` has that Call-ID.
    fn relay_taken_notice(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        source: SocketAddr,
        request: &Request,
    ) -> bool {
        let call_id = MessageIds::of(request)
            .call_id
            .unwrap_or_else(|| CallIdValue::new(""));
        // Still ringing down here: each branch gets it once its INVITE is over.
        let live = self
            .calls
            .values_mut()
            .find(|c| c.cancelled && c.a_call_id == call_id && c.a_peer == source);
        if let Some(c) = live {
            c.relayed_notice = Some(request.body.clone());
            let done: Vec<Notice> = c
                .branches
                .iter()
                .filter(|b| b.invite.is_some() && b.status.is_some())
                .map(|b| Self::notice_for(c, b))
                .collect();
            for notice in &done {
                self.send_notice(now, layer, notice, &request.body);
            }
            return true;
        }
        let Some(at) = self
            .recently_cancelled
            .iter()
            .position(|r| r.a_call_id == call_id && r.a_peer == source)
        else {
            return false;
        };
        let Some(cancelled) = self.recently_cancelled.remove(at) else {
            return false;
        };
        for notice in &cancelled.notices {
            self.send_notice(now, layer, notice, &request.body);
        }
        true
    }

    /// A branch of leg B failed with `status` (408 for a timeout). Serial ringing moves
    /// on to the next destination on 408/503; once no branch is left ringing, leg A
    /// hears the best failure (or the call just ends if leg A cancelled).
    fn branch_failed(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        branch: usize,
        status: u16,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(b) = c.branches.get_mut(branch) else {
            return;
        };
        b.status = Some(status);
        if c.cancelled
            && let Some(body) = c.relayed_notice.clone()
        {
            let notice = Self::notice_for(c, &c.branches[branch]);
            self.send_notice(now, layer, &notice, &body);
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.winner.is_some() {
            // A branch cancelled because another answered: tell it who did.
            self.send_taken_notice(now, layer, call, branch);
            return;
        }
        if matches!(status, 408 | 503) && self.try_next_destination(now, layer, call) {
            return;
        }
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.branches.iter().any(Branch::live) {
            return;
        }
        if c.cancelled {
            self.end(now, layer, call, "cancelled");
            return;
        }
        // A redirection or challenge from the far side is not leg A's business.
        let status = match best_failure(c.branches.iter().filter_map(|b| b.status)) {
            300..=399 => 480,
            401 | 407 => 403,
            s => s,
        };
        self.fail_a(now, layer, call, status);
    }

    /// Serial ringing: sends leg B's INVITE to the next destination, if any is left and
    /// leg A still waits. True if one was sent.
    fn try_next_destination(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
    ) -> bool {
        let Some(mut c) = self.calls.remove(&call) else {
            return false;
        };
        let mut sent = false;
        while !c.cancelled
            && !sent
            && c.outbound.forks.is_empty()
            && let Some(next) = c.b_next.pop_front()
        {
            tracing::info!(next = %next, "leg B failed: trying the next destination");
            let cseq = c.branches.last().map_or(1, |b| b.cseq + 1);
            let fork = Fork {
                destination: next,
                request_uri: c.outbound.request_uri.clone(),
                headers: Vec::new(),
                party: String::new(),
            };
            c.branches.push(Branch::new(fork, cseq));
            let branch = c.branches.len() - 1;
            c.b_peer = next;
            sent = self.send_b_invite(now, layer, &mut c, branch, 69).is_ok();
        }
        self.calls.insert(call, c);
        sent
    }

    /// Answers leg A's INVITE with a failure and ends the call.
    fn fail_a(&mut self, now: Instant, layer: &mut TransactionLayer, call: u64, status: u16) {
        if let Some(c) = self.calls.get_mut(&call)
            && let Some((tx, request)) = c.a_invite.take()
        {
            self.a_invites.remove(&tx);
            c.a_status = Some(status);
            let _ = layer.respond_to(now, tx, &request, status, Some(&c.a_tag));
        }
        self.end(now, layer, call, "leg B failed");
    }

    /// An SDP from `side`'s endpoint: remember where it wants media (unless on hold
    /// at an unspecified address) and tell the media plane. The mapping now in force.
    fn learn_endpoint(&mut self, call: u64, side: Side, session: &Session) -> Option<MediaMapping> {
        let mapping = self.calls.get_mut(&call)?.media.as_mut()?;
        let remote = endpoint_of(session);
        match side {
            Side::A => mapping.a_remote = remote.or(mapping.a_remote),
            Side::B => mapping.b_remote = remote.or(mapping.b_remote),
        }
        let mapping = mapping.clone();
        self.media.update(call, &mapping);
        Some(mapping)
    }

    /// An in-dialog SDP body from `from`, learnt and anchored at our address facing the
    /// other side; `None` when it is no SDP we can read or the call has no media.
    fn relay_sdp(&mut self, call: u64, from: Side, body: &[u8]) -> Option<Vec<u8>> {
        let mut session = sdp::parse(body).ok()?;
        if let (Some(c), Some(audio)) = (
            self.calls.get_mut(&call),
            session.medias.iter().find(|m| m.media == "audio"),
        ) {
            c.held = sdp::direction(&session, audio) != sdp::Direction::SendRecv
                || endpoint_of(&session).is_none();
        }
        let mapping = self.learn_endpoint(call, from, &session)?;
        let facing_other = match from {
            Side::A => mapping.b_local,
            Side::B => mapping.a_local,
        };
        sdp::anchor(&mut session, facing_other);
        Some(sdp::to_bytes(&session))
    }

    /// The SDP for leg A built from leg B's: anchored at our A-side address; when the
    /// router chose codecs for leg B, an answer to leg A's own offer with the codecs
    /// leg B accepted (through transcoding).
    fn sdp_for_a(&self, c: &Call, b_sdp: &mut Session) -> Option<Vec<u8>> {
        let mapping = c.media.as_ref()?;
        if c.outbound.codecs.is_some()
            && let Some(offer) = &c.a_offer
        {
            let accepted: Vec<Codec> = b_sdp
                .medias
                .iter()
                .find(|m| m.media == "audio" && m.port != 0)
                .map(|m| sdp::payloads(m).into_iter().map(|p| p.codec).collect())
                .unwrap_or_default();
            let accepted: Vec<Codec> = accepted
                .into_iter()
                .map(|codec| match (c.outbound.transcode, law_of(codec)) {
                    (Some(t), Some(law)) if law == t.b_side => codec_of(t.a_side),
                    _ => codec,
                })
                .collect();
            return sdp::answer(
                offer,
                &accepted,
                mapping.a_local,
                rand::random::<u32>() as u64,
            )
            .ok()
            .map(|s| sdp::to_bytes(&s));
        }
        Some(sdp::anchored_bytes(b_sdp, mapping.a_local))
    }

    fn on_b_invite_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        branch: usize,
        response: Response,
    ) {
        let status = response.status_code.code();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let mut b_sdp = if response.body.is_empty() {
            None
        } else {
            sdp::parse(&response.body).ok()
        };
        match status {
            100 => {}
            101..=199 => {
                if c.cancelled || c.phase != Phase::Calling || c.winner.is_some() {
                    return;
                }
                let mut body = None;
                if let Some(b_sdp) = &mut b_sdp {
                    self.learn_endpoint(call, Side::B, b_sdp);
                    body = self.calls.get(&call).and_then(|c| self.sdp_for_a(c, b_sdp));
                }
                let contact = self.contact();
                let Some(c) = self.calls.get(&call) else {
                    return;
                };
                if let Some((tx, request)) = &c.a_invite {
                    let r =
                        dialog_response(request, status, &c.a_tag, &contact, None, body.as_deref());
                    let _ = layer.respond_wire(now, *tx, status, Some(c.a_tag.clone()), r);
                }
            }
            200..=299 => self.on_b_answer(now, layer, call, branch, response, b_sdp),
            _ => self.branch_failed(now, layer, call, branch, status),
        }
    }

    /// ACKs and hangs up a 2xx from `branch` that is not the call's answer (a second
    /// branch answering, or a fork behind it).
    fn release_extra_answer(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        branch: usize,
        response: &Response,
    ) {
        let local = self.local_text.clone();
        let Some(b) = self.calls.get(&call).and_then(|c| c.branches.get(branch)) else {
            return;
        };
        let (Some((_, invite)), peer, cseq) = (&b.invite, b.fork.destination, b.cseq) else {
            return;
        };
        if let Ok(mut extra) = Dialog::from_uac(invite, response) {
            if let Ok(ack) = extra.ack_wire(cseq, &local) {
                let _ = layer.send_stateless(next_hop(&extra, peer), ack);
            }
            if let Ok(bye) = extra.request(Method::Bye, &local, None)
                && let Ok(tx) = layer.send_request(now, next_hop(&extra, peer), bye)
            {
                self.client.insert(tx, Pending::Own);
            }
        }
    }

    fn on_b_answer(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        branch: usize,
        response: Response,
        mut b_sdp: Option<Session>,
    ) {
        let local = self.local_text.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let to_tag = crate::sip::ids::to_tag(&response);
        if let Some(dialog) = &c.b_dialog {
            if c.winner == Some(branch) && Some(&dialog.id.remote_tag) == to_tag.as_ref() {
                // A retransmitted 2xx: our ACK got lost (§13.2.2.4).
                if let Some(ack) = c.b_ack.clone() {
                    let hop = next_hop(dialog, c.b_peer);
                    let _ = layer.send_stateless(hop, ack);
                }
            } else {
                self.release_extra_answer(now, layer, call, branch, &response);
            }
            return;
        }
        let Some(b) = c.branches.get_mut(branch) else {
            return;
        };
        let Some((_, invite)) = &b.invite else {
            return;
        };
        let dialog = Dialog::from_uac(invite, &response);
        b.status = Some(response.status_code.code());
        let (destination, cseq) = (b.fork.destination, b.cseq);
        let dialog = match dialog {
            Ok(d) => d,
            Err(e) => {
                // No To tag or no Contact: no dialog to ACK or hang up.
                tracing::warn!(error = %e, "leg B's 2xx unusable");
                self.branch_failed(now, layer, call, branch, 502);
                return;
            }
        };
        // Behind a peer B2BUA of ours, the party is whoever answered there.
        if let Some(party) = crate::sip::uas::header_text(&response, ANSWERED_BY) {
            c.branches[branch].fork.party = party.trim().to_owned();
        }
        c.winner = Some(branch);
        c.b_peer = destination;
        c.b_cseq = cseq;
        if let Ok(bytes) = dialog.ack_wire(cseq, &local) {
            let _ = layer.send_stateless(next_hop(&dialog, destination), bytes.clone());
            c.b_ack = Some(bytes);
        }
        c.b_dialog = Some(dialog);
        // The other branches stop ringing.
        let ringing: Vec<TransactionId> = c
            .branches
            .iter()
            .filter(|b| b.live())
            .filter_map(|b| b.invite.as_ref().map(|(tx, _)| *tx))
            .collect();
        for tx in ringing {
            let _ = layer.cancel(now, tx);
        }
        if c.cancelled || c.a_invite.is_none() {
            // Leg A gave up while leg B answered: hang leg B up.
            self.send_bye(now, layer, call, Side::B);
            self.end(now, layer, call, "answered after CANCEL");
            return;
        }
        let mut body = None;
        if let Some(b_sdp) = &mut b_sdp {
            self.learn_endpoint(call, Side::B, b_sdp);
            body = self.calls.get(&call).and_then(|c| self.sdp_for_a(c, b_sdp));
        }
        let contact_uri = format!("sip:{}@{}", self.config.contact_user, self.local_text);
        let contact = self.contact();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some((tx, request)) = c.a_invite.take() else {
            return;
        };
        self.a_invites.remove(&tx);
        match Dialog::from_uas(&request, c.a_tag.clone(), &contact_uri) {
            Ok(d) => c.a_dialog = Some(d),
            Err(e) => tracing::warn!(error = %e, "leg A's dialog"),
        }
        let party = &c.branches[branch].fork.party;
        let answered_by =
            (!party.is_empty()).then(|| Header::Other(ANSWERED_BY.into(), party.clone()));
        let ok = dialog_response(
            &request,
            200,
            &c.a_tag,
            &contact,
            answered_by.as_ref(),
            body.as_deref(),
        );
        if let Err(e) = layer.respond_wire(now, tx, 200, Some(c.a_tag.clone()), ok) {
            // Leg A's INVITE is over already (a CANCEL crossed leg B's 200 in the same
            // batch): nobody to connect leg B to.
            tracing::info!(call, error = %e, "leg A gone as leg B answered: hanging leg B up");
            self.send_bye(now, layer, call, Side::B);
            self.end(now, layer, call, "leg A gone before the answer");
            return;
        }
        c.a_status = Some(200);
        c.phase = Phase::Answered;
        c.answered_unix_ms = unix_ms();
        let answered = summary_of(c, 0);
        if let Some(timeout) = self.config.media_timeout
            && self.next_media_check.is_none()
        {
            self.next_media_check = Some(now + timeout.min(MEDIA_CHECK));
        }
        self.awaiting_ack.insert(tx, call);
        c.awaiting_ack = Some(tx);
        self.stats.calls_answered += 1;
        tracing::info!(call, answered_by = %c.branches[branch].fork.party, "call answered");
        self.changed(call);
        if let Some(plan) = self.router.recording(&answered) {
            self.start_recordings(now, layer, call, plan);
        }
    }

    fn in_dialog(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: TransactionId,
        request: Request,
        call: u64,
        side: Side,
    ) {
        let local = self.local_text.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            let _ = layer.respond_to(now, id, &request, 481, None);
            return;
        };
        let Some(dialog) = c.dialog_mut(side) else {
            let _ = layer.respond_to(now, id, &request, 481, None);
            return;
        };
        if let Err(status) = dialog.receive_request(&request) {
            let _ = layer.respond_to(now, id, &request, status, None);
            return;
        }
        if request.method == Method::Bye {
            let _ = layer.respond_to(now, id, &request, 200, None);
            self.send_bye(now, layer, call, side.other());
            self.end(
                now,
                layer,
                call,
                if side == Side::A {
                    "BYE from A"
                } else {
                    "BYE from B"
                },
            );
            return;
        }
        // Relay to the other leg, SDP anchored there.
        let mut body = request.body.clone();
        if !body.is_empty()
            && matches!(request.method, Method::Invite | Method::Update)
            && let Some(anchored) = self.relay_sdp(call, side, &body)
        {
            body = anchored;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let other = side.other();
        let peer = c.peer(other);
        let Some(dialog) = c.dialog_mut(other) else {
            let _ = layer.respond_to(now, id, &request, 481, None);
            return;
        };
        let mut relayed = match dialog.request(request.method, &local, None) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not relay in-dialog request");
                let _ = layer.respond_to(now, id, &request, 500, None);
                return;
            }
        };
        let cseq = dialog.local_seq;
        if !body.is_empty() {
            let ct = content_type(&request).unwrap_or_else(|| "application/sdp".into());
            relayed = request_with_body(relayed, &ct, body);
        }
        let hop = next_hop(dialog, peer);
        let method = request.method;
        match layer.send_request(now, hop, relayed) {
            Ok(tx) => {
                self.client.insert(
                    tx,
                    Pending::Relayed {
                        call,
                        server: id,
                        from: side,
                        method,
                        cseq,
                    },
                );
                // Those answered since are dropped from the list as it grows.
                let client = &self.client;
                c.relayed.retain(|tx| client.contains_key(tx));
                c.relayed.push(tx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not relay in-dialog request");
                let _ = layer.respond_to(now, id, &request, 500, None);
            }
        }
        self.changed(call);
    }

    #[allow(clippy::too_many_arguments)] // the parts of one Pending::Relayed
    fn on_relayed_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        server: TransactionId,
        from: Side,
        method: Method,
        cseq: u32,
        response: Response,
    ) {
        let status = response.status_code.code();
        if status < 200 {
            return;
        }
        let local = self.local_text.clone();
        let contact_header = self.contact();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let other = from.other();
        // The ACK for a relayed re-INVITE's 2xx is ours to send, at once.
        if method == Method::Invite && (200..300).contains(&status) {
            let peer = c.peer(other);
            if let Some(dialog) = c.dialog_mut(other)
                && let Ok(ack) = dialog.ack_wire(cseq, &local)
            {
                let _ = layer.send_stateless(next_hop(dialog, peer), ack);
            }
        }
        // The answer comes from the side the request was relayed to.
        let mut body = response.body.clone();
        if !body.is_empty()
            && let Some(anchored) = self.relay_sdp(call, other, &body)
        {
            body = anchored;
        }
        // The server transaction still holds what a response copies of the request;
        // answer from it.
        let with_contact = [&contact_header];
        let contact = (200..300).contains(&status) && method == Method::Invite;
        if let Err(e) = layer.respond_from_head(
            now,
            server,
            status,
            None,
            if contact { &with_contact } else { &[] },
            (!body.is_empty()).then_some(("application/sdp", body.as_slice())),
        ) {
            tracing::debug!(call, status, error = %e, "relayed answer not sent");
        }
        self.changed(call);
    }
}

impl<R: Router + Send + 'static, M: MediaAnchor + Send + 'static> TransactionUser for B2bua<R, M> {
    fn next_timer(&self) -> Option<Instant> {
        let probe = self.recording_probes.front().map(|&(at, _, _)| at);
        let shrink = self.shrink_pace.owed_at();
        self.next_media_check
            .into_iter()
            .chain(probe)
            .chain(shrink)
            .min()
    }

    /// Asks the recorders that are due whether they still have their recordings, and
    /// hangs up answered calls whose media went silent (not on hold) for the timeout.
    fn on_timer(&mut self, now: Instant, layer: &mut TransactionLayer) {
        self.probe_recordings(now, layer);
        if self.next_media_check.is_some_and(|at| at <= now) {
            self.check_media(now, layer);
        }
        if self.shrink_pace.owed_at().is_some_and(|at| at <= now) {
            self.shrink_tables(now);
        }
    }

    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        match event {
            Event::Request {
                id,
                source,
                request,
                ids,
            } => match (&ids.to_tag, request.method) {
                (Some(tag), _) => {
                    let key = (
                        ids.call_id.clone().unwrap_or_else(|| CallIdValue::new("")),
                        tag.clone(),
                    );
                    match self.legs.get(&key).copied() {
                        Some((call, side)) => self.in_dialog(now, layer, id, request, call, side),
                        None if self.recording_legs.contains_key(&key) => {
                            if let Some((call, index)) = self.recording_legs.get(&key).copied() {
                                self.recording_request(now, layer, id, &request, call, index);
                            }
                        }
                        None => {
                            let _ = layer.respond_to(now, id, &request, 481, None);
                        }
                    }
                }
                (None, Method::Invite) => self.new_call(now, layer, id, source, request, &ids),
                (None, Method::Options) => {
                    let ok =
                        with_header(response_to(&request, 200, Some(&Tag::generate())), allow());
                    let _ = layer.respond(now, id, ok);
                }
                (None, Method::Message)
                    if self.relay_taken_notice(now, layer, source, &request) =>
                {
                    let _ = layer.respond_to(now, id, &request, 200, Some(&Tag::generate()));
                }
                (None, Method::Bye) => {
                    let _ = layer.respond_to(now, id, &request, 481, Some(&Tag::generate()));
                }
                (None, _) => {
                    let refused =
                        with_header(response_to(&request, 405, Some(&Tag::generate())), allow());
                    let _ = layer.respond(now, id, refused);
                }
            },
            Event::Ack { ids, .. } => {
                if let (Some(call_id), Some(tag)) = (ids.call_id, ids.to_tag)
                    && let Some((call, Side::A)) = self.legs.get(&(call_id, tag)).copied()
                    && let Some(tx) = self
                        .calls
                        .get_mut(&call)
                        .and_then(|c| c.awaiting_ack.take())
                {
                    self.awaiting_ack.remove(&tx);
                }
            }
            Event::AckTimeout { id } => {
                if let Some(call) = self.awaiting_ack.remove(&id) {
                    // §13.3.1.4: no ACK from leg A; end both legs.
                    self.send_bye(now, layer, call, Side::A);
                    self.send_bye(now, layer, call, Side::B);
                    self.end(now, layer, call, "no ACK from leg A");
                }
            }
            Event::Cancelled { invite } => {
                let Some(call) = self.a_invites.remove(&invite) else {
                    // A relayed re-INVITE cancelled by its sender: cancel it onwards.
                    let relayed = self.client.iter().find_map(|(tx, p)| match p {
                        Pending::Relayed { server, .. } if *server == invite => Some(*tx),
                        _ => None,
                    });
                    if let Some(tx) = relayed {
                        let _ = layer.cancel(now, tx);
                    }
                    return;
                };
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                c.cancelled = true;
                // The layer has answered leg A 487.
                c.a_invite = None;
                c.a_status = Some(487);
                let mut waiting = false;
                for b in c.branches.iter().filter(|b| b.live()) {
                    if let Some((tx, _)) = &b.invite {
                        let outcome = layer.cancel(now, *tx);
                        // Too late to cancel but the transaction lives: its final
                        // response is on its way (maybe already in this batch) and ends
                        // the call, with an ACK and a BYE if it is a 2xx.
                        waiting |=
                            outcome == CancelOutcome::Pending || layer.client_state(*tx).is_some();
                    }
                }
                if !waiting {
                    self.end(now, layer, call, "cancelled");
                }
            }
            Event::Response { id, response, .. } => {
                let is_final = response.status_code.code() >= 200;
                let pending = if is_final {
                    self.client.remove(&id)
                } else {
                    self.client.get(&id).cloned()
                };
                match pending {
                    Some(Pending::Invite { call, branch }) => {
                        if is_final && (200..300).contains(&response.status_code.code()) {
                            // Keep listening for retransmitted or forked 2xx (Timer M).
                            self.client.insert(id, Pending::Invite { call, branch });
                        }
                        self.on_b_invite_response(now, layer, call, branch, response);
                    }
                    Some(Pending::Relayed {
                        call,
                        server,
                        from,
                        method,
                        cseq,
                    }) => self.on_relayed_response(
                        now, layer, call, server, from, method, cseq, response,
                    ),
                    Some(Pending::Recording {
                        call,
                        index,
                        invite,
                    }) => {
                        if is_final
                            && (200..300).contains(&response.status_code.code())
                            && self.calls.contains_key(&call)
                        {
                            // Keep listening for retransmitted 2xx (Timer M).
                            self.client.insert(
                                id,
                                Pending::Recording {
                                    call,
                                    index,
                                    invite: invite.clone(),
                                },
                            );
                        }
                        self.on_recording_response(now, layer, call, index, &invite, response);
                    }
                    Some(Pending::Probe { call, index }) if is_final => {
                        let status = response.status_code.code();
                        if status == 481 {
                            self.recording_lost(call, index, "the recorder knows it no more (481)");
                        } else if let Some(r) = recording_mut(&mut self.calls, call, index)
                            .filter(|r| r.probe == Some(id))
                        {
                            // Any other answer (even 405) says the recorder is there.
                            r.probe = None;
                        }
                    }
                    Some(Pending::Own | Pending::Probe { .. }) | None => {}
                }
            }
            Event::Stray2xx { ids, .. } => {
                // A late 2xx retransmission for leg B: ACK it again.
                if let (Some(call_id), Some(tag)) = (ids.call_id, ids.from_tag)
                    && let Some((call, Side::B)) = self.legs.get(&(call_id, tag)).copied()
                    && let Some(c) = self.calls.get(&call)
                    && let (Some(ack), Some(dialog)) = (&c.b_ack, &c.b_dialog)
                {
                    let _ = layer.send_stateless(next_hop(dialog, c.b_peer), ack.clone());
                }
            }
            Event::Timeout { id } => match self.client.remove(&id) {
                Some(Pending::Invite { call, branch }) => {
                    self.branch_failed(now, layer, call, branch, 408);
                }
                Some(Pending::Relayed { server, .. }) => {
                    let _ = layer.respond_from_head(now, server, 408, None, &[], None);
                }
                Some(Pending::Recording { call, index, .. }) => {
                    if let Some(r) = recording_mut(&mut self.calls, call, index)
                        .filter(|r| r.state == RecordingState::Offered)
                    {
                        r.state = RecordingState::Failed;
                        tracing::warn!(call, recorder = %r.recorder, "recorder did not answer");
                    }
                }
                Some(Pending::Probe { call, index }) => {
                    self.recording_lost(call, index, "the keepalive OPTIONS timed out");
                }
                Some(Pending::Own) | None => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::ingress::{Inbound, parse_datagram};
    use crate::sip::transaction::LayerConfig;

    const A: &str = "127.0.0.1:5070";
    const B1: &str = "127.0.0.1:5080";
    const B2: &str = "127.0.0.1:5090";
    const US: &str = "127.0.0.1:5060";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    /// Routes every call to B1 then B2 (or to both at once with `fork`); counts what it
    /// admitted and released, and keeps every summary.
    #[derive(Default)]
    struct TestRouter {
        admitted: u32,
        ended: u32,
        refuse: bool,
        fork: bool,
        summaries: Vec<CallSummary>,
        /// Recorders every answered call is recorded to.
        recorders: Vec<SocketAddr>,
    }

    impl Router for TestRouter {
        fn route(
            &mut self,
            _now: Instant,
            _source: SocketAddr,
            _invite: &Request,
            _offered: &[Codec],
        ) -> Result<Outbound, RouteRefusal> {
            if self.refuse {
                return Err(RouteRefusal {
                    status: 403,
                    reason: "blocked destination".into(),
                    retry_after: None,
                });
            }
            self.admitted += 1;
            let mut outbound = Outbound {
                destinations: vec![addr(B1), addr(B2)],
                request_uri: "sip:+33142685300@127.0.0.1:5080".into(),
                forks: Vec::new(),
                taken_notice: None,
                from: "<sip:+33140000000@127.0.0.1>".into(),
                to: "<sip:+33142685300@127.0.0.1>".into(),
                headers: vec![("X-Trunk".into(), "carrier".into())],
                codecs: None,
                transcode: None,
                label: "carrier".into(),
            };
            if self.fork {
                outbound.forks = [(B1, "desk-1"), (B2, "desk-2")]
                    .into_iter()
                    .map(|(to, party)| Fork {
                        destination: addr(to),
                        request_uri: format!("sip:{party}@{to}"),
                        headers: vec![("X-Desk".into(), party.into())],
                        party: party.into(),
                    })
                    .collect();
                outbound.taken_notice = Some("7100".into());
            }
            Ok(outbound)
        }
        fn ended(&mut self, _label: &str) {
            self.ended += 1;
        }
        fn call_ended(&mut self, summary: &CallSummary) {
            self.summaries.push(summary.clone());
        }
        fn recording(&mut self, answered: &CallSummary) -> Option<RecordingPlan> {
            (!self.recorders.is_empty()).then(|| RecordingPlan {
                recorders: self.recorders.clone(),
                metadata: siprec::RecordingMetadata {
                    call_id: answered.call_id.clone(),
                    caller: siprec::Participant {
                        aor: format!("sip:{}@127.0.0.1", answered.calling),
                        name: None,
                    },
                    callee: siprec::Participant {
                        aor: format!("sip:{}@127.0.0.1", answered.called),
                        name: None,
                    },
                    start_time: "2026-12-01T09:30:00Z".into(),
                    extension: vec![("direction".into(), "outbound".into())],
                },
            })
        }
    }

    /// Hands out fixed ports and remembers every mapping it was told.
    #[derive(Default)]
    struct TestMedia {
        open: std::collections::HashMap<u64, MediaMapping>,
        closed: u32,
        /// Every relay reports a minute without packets.
        silent: bool,
        /// Where each call's media is copied for its recorders.
        recorded: std::collections::HashMap<u64, Vec<RecorderStreams>>,
    }

    impl MediaAnchor for TestMedia {
        fn open(&mut self, call: u64) -> Result<(SocketAddr, SocketAddr), Error> {
            let local = (addr("127.0.0.1:16000"), addr("127.0.0.1:16002"));
            self.open.insert(
                call,
                MediaMapping {
                    a_local: local.0,
                    b_local: local.1,
                    a_remote: None,
                    b_remote: None,
                    transcode: None,
                },
            );
            Ok(local)
        }
        fn update(&mut self, call: u64, mapping: &MediaMapping) {
            self.open.insert(call, mapping.clone());
        }
        fn restore(&mut self, call: u64, mapping: &MediaMapping) -> Result<(), Error> {
            self.open.insert(call, mapping.clone());
            Ok(())
        }
        fn close(&mut self, call: u64) {
            self.open.remove(&call);
            self.closed += 1;
        }
        fn record(&mut self, call: u64, recorders: &[RecorderStreams]) {
            self.recorded.insert(call, recorders.to_vec());
        }
        fn idle(&self, call: u64) -> Option<Duration> {
            self.open
                .get(&call)
                .map(|_| Duration::from_secs(if self.silent { 60 } else { 0 }))
        }
    }

    type Core = B2bua<TestRouter, TestMedia>;

    struct Harness {
        layer: TransactionLayer,
        core: Core,
        now: Instant,
    }

    enum Out {
        Request(SocketAddr, Request),
        Response(SocketAddr, Response),
    }

    impl Harness {
        fn new() -> Self {
            Self {
                layer: TransactionLayer::new(LayerConfig::default()),
                core: B2bua::new(
                    B2buaConfig {
                        replicate: true,
                        ..B2buaConfig::new(addr(US))
                    },
                    TestRouter::default(),
                    TestMedia::default(),
                ),
                now: Instant::now(),
            }
        }

        /// Delivers `text` from `source`; returns what went out.
        fn deliver(&mut self, source: &str, text: &str) -> Vec<Out> {
            let bytes = text.replace('\n', "\r\n");
            self.layer
                .handle_datagram(self.now, addr(source), bytes.as_bytes());
            self.pump()
        }

        /// Delivers several datagrams in one batch (as the UDP driver may) before the
        /// core sees any event.
        fn deliver_batch(&mut self, datagrams: &[(&str, String)]) -> Vec<Out> {
            for (source, text) in datagrams {
                let bytes = text.replace('\n', "\r\n");
                self.layer
                    .handle_datagram(self.now, addr(source), bytes.as_bytes());
            }
            self.pump()
        }

        fn pump(&mut self) -> Vec<Out> {
            while let Some(e) = self.layer.poll_event() {
                self.core.on_event(self.now, e, &mut self.layer);
            }
            std::iter::from_fn(|| self.layer.poll_transmit())
                .map(|t| match parse_datagram(&t.bytes) {
                    Ok(Inbound::Request(r)) => Out::Request(t.destination, r),
                    Ok(Inbound::Response(r)) => Out::Response(t.destination, r),
                    other => panic!("unparseable output {other:?}"),
                })
                .collect()
        }
    }

    fn responses(out: &[Out], to: &str) -> Vec<u16> {
        out.iter()
            .filter_map(|o| match o {
                Out::Response(d, r) if *d == addr(to) => Some(r.status_code.code()),
                _ => None,
            })
            .collect()
    }

    fn requests<'a>(out: &'a [Out], to: &str) -> Vec<&'a Request> {
        out.iter()
            .filter_map(|o| match o {
                Out::Request(d, r) if *d == addr(to) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn header(message: &impl rsipstack::sip::HasHeaders, name: &str) -> Option<String> {
        crate::sip::uas::header_text(message, name)
    }

    const SDP_A: &str = "v=0\no=a 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=sendrecv\n";
    const SDP_B: &str = "v=0\no=b 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 42000 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=sendrecv\n";

    fn with_sdp(head: &str, sdp: &str) -> String {
        let body = sdp.replace('\n', "\r\n");
        format!(
            "{head}Content-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
            body.len()
        )
    }

    fn invite_from_a() -> String {
        with_sdp(
            &format!(
                "INVITE sip:0142685300@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa1\n\
Max-Forwards: 70\nFrom: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>\n\
Call-ID: a-leg-call\nCSeq: 1 INVITE\nContact: <sip:a@{A}>\nRecord-Route: <sip:leak@10.9.9.9;lr>\n"
            ),
            SDP_A,
        )
    }

    /// A BYE from leg B's side (its To tag `tag`) in the dialog of `invite`, CSeq 2.
    fn bye_from_b(invite: &Request, tag: &str, branch: &str) -> String {
        format!(
            "BYE sip:tpo@{US} SIP/2.0\nVia: SIP/2.0/UDP {B1};branch={branch}\nMax-Forwards: 70\n\
From: {};tag={tag}\nTo: {}\nCall-ID: {}\nCSeq: 2 BYE\nContent-Length: 0\n\n",
            header(invite, "To").expect("To"),
            header(invite, "From").expect("From"),
            header(invite, "Call-ID").expect("Call-ID"),
        )
    }

    /// A recorder's answer: stream 1 on port 30000, stream 2 on 30002.
    const SRS_SDP: &str = "v=0\no=srs 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n\
m=audio 30000 RTP/AVP 8\na=label:1\na=recvonly\nm=audio 30002 RTP/AVP 8\na=label:2\na=recvonly\n";

    /// The response B sends to leg B's INVITE, built from it.
    fn b_response(invite: &Request, status: u16, tag: &str, sdp: Option<&str>) -> String {
        let mut text = format!("SIP/2.0 {status} Whatever\n");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            text.push_str(&format!("{name}: {}\n", header(invite, name).expect(name)));
        }
        text.push_str(&format!(
            "To: {};tag={tag}\n",
            header(invite, "To").expect("To")
        ));
        text.push_str(&format!("Contact: <sip:b@{B1}>\n"));
        match sdp {
            Some(sdp) => with_sdp(&text, sdp),
            None => format!("{text}Content-Length: 0\n\n"),
        }
    }

    /// Sets a call up to answered; returns leg B's INVITE and leg A's 200.
    fn answered_call(h: &mut Harness) -> (Request, Response) {
        let out = h.deliver(A, &invite_from_a());
        assert_eq!(responses(&out, A), vec![100]);
        let b_invite = requests(&out, B1)[0].clone();
        let out = h.deliver(B1, &b_response(&b_invite, 180, "bt", None));
        assert_eq!(responses(&out, A), vec![180]);
        let out = h.deliver(B1, &b_response(&b_invite, 200, "bt", Some(SDP_B)));
        let acks = requests(&out, B1);
        assert_eq!(acks.len(), 1, "leg B ACKed at once");
        assert_eq!(acks[0].method, Method::Ack);
        let ok = out
            .into_iter()
            .find_map(|o| match o {
                Out::Response(d, r) if d == addr(A) && r.status_code.code() == 200 => Some(r),
                _ => None,
            })
            .expect("200 to leg A");
        (b_invite, ok)
    }

    #[test]
    fn legs_are_independent_and_a_call_goes_up_and_down() {
        let mut h = Harness::new();
        let (b_invite, ok) = answered_call(&mut h);
        // Nothing of leg A reaches leg B.
        let text = String::from_utf8(b_invite.to_bytes()).expect("utf8");
        for leaked in [
            "a-leg-call",
            A,
            "leak@10.9.9.9",
            "branch=z9hG4bKa1",
            "tag=at",
        ] {
            assert!(
                !text.contains(leaked),
                "{leaked} leaked into leg B:\n{text}"
            );
        }
        assert!(text.contains("X-Trunk: carrier"));
        assert!(
            text.contains("m=audio 16002 "),
            "leg B's offer anchored:\n{text}"
        );
        // Leg A's answer is anchored at the A-side port, with leg B's codecs.
        let answer = String::from_utf8(ok.body.clone()).expect("utf8");
        assert!(answer.contains("m=audio 16000 RTP/AVP 8 101"), "{answer}");
        let mapping = h
            .core
            .media()
            .open
            .values()
            .next()
            .expect("mapping")
            .clone();
        assert_eq!(mapping.a_remote, Some(addr("127.0.0.1:40000")));
        assert_eq!(mapping.b_remote, Some(addr("127.0.0.1:42000")));
        let Some(Change::Upsert(snapshot)) = h.core.poll_change() else {
            panic!("answered call replicated");
        };
        assert_eq!(snapshot.a_dialog.id.call_id.as_str(), "a-leg-call");
        // Leg A hangs up: 200 to A, BYE to B, call gone.
        let a_tag = MessageIds::of(&ok).to_tag.expect("our tag");
        let bye = format!(
            "BYE sip:b2bua@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa2\nMax-Forwards: 70\n\
From: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>;tag={a_tag}\n\
Call-ID: a-leg-call\nCSeq: 2 BYE\nContent-Length: 0\n\n"
        );
        let out = h.deliver(A, &bye);
        assert_eq!(responses(&out, A), vec![200]);
        let byes = requests(&out, B1);
        assert_eq!(byes[0].method, Method::Bye);
        assert_eq!(header(byes[0], "Call-ID"), header(&b_invite, "Call-ID"));
        assert_eq!(h.core.poll_change(), Some(Change::Remove(snapshot.call)));
        assert_eq!(h.core.stats().calls_active, 0);
        assert_eq!(h.core.media().closed, 1);
        assert_eq!(h.core.router_mut().ended, 1);
    }

    #[test]
    fn cancel_from_a_cancels_leg_b() {
        let mut h = Harness::new();
        let out = h.deliver(A, &invite_from_a());
        let b_invite = requests(&out, B1)[0].clone();
        h.deliver(B1, &b_response(&b_invite, 180, "bt", None));
        let cancel = format!(
            "CANCEL sip:0142685300@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa1\nMax-Forwards: 70\n\
From: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>\nCall-ID: a-leg-call\n\
CSeq: 1 CANCEL\nContent-Length: 0\n\n"
        );
        let out = h.deliver(A, &cancel);
        let mut to_a = responses(&out, A);
        to_a.sort();
        assert_eq!(to_a, vec![200, 487]);
        let b_cancel = requests(&out, B1);
        assert_eq!(b_cancel[0].method, Method::Cancel);
        let out = h.deliver(B1, &b_response(&b_invite, 487, "bt", None));
        assert_eq!(requests(&out, B1)[0].method, Method::Ack);
        assert_eq!(h.core.stats().calls_active, 0);
        assert_eq!(h.core.stats().calls_unanswered, 1);
        assert_eq!(h.core.router_mut().ended, 1);
        assert_eq!(
            h.core.poll_change(),
            None,
            "never answered, never replicated"
        );
    }

    #[test]
    fn a_503_moves_the_call_to_the_next_destination_and_failures_reach_a() {
        let mut h = Harness::new();
        let out = h.deliver(A, &invite_from_a());
        let first = requests(&out, B1)[0].clone();
        let out = h.deliver(B1, &b_response(&first, 503, "x1", None));
        let second = requests(&out, B2);
        assert_eq!(second.len(), 1, "retried on B2");
        assert_eq!(header(second[0], "Call-ID"), header(&first, "Call-ID"));
        assert_ne!(header(second[0], "CSeq"), header(&first, "CSeq"));
        let second = second[0].clone();
        let out = h.deliver(B2, &b_response(&second, 486, "x2", None));
        assert_eq!(responses(&out, A), vec![486]);
        assert_eq!(h.core.stats().calls_active, 0);
    }

    #[test]
    fn refusals_carry_the_reason_and_load_refusals_retry_after() {
        let mut h = Harness::new();
        h.core.router_mut().refuse = true;
        let out = h.deliver(A, &invite_from_a());
        let refused = out
            .iter()
            .find_map(|o| match o {
                Out::Response(_, r) if r.status_code.code() == 403 => Some(r),
                _ => None,
            })
            .expect("403");
        assert!(
            header(refused, "Warning")
                .expect("Warning")
                .contains("blocked destination")
        );
        let mut h = Harness::new();
        h.core.config.max_calls = 0;
        let out = h.deliver(A, &invite_from_a());
        let busy = out
            .iter()
            .find_map(|o| match o {
                Out::Response(_, r) if r.status_code.code() == 503 => Some(r),
                _ => None,
            })
            .expect("503");
        assert_eq!(header(busy, "Retry-After").as_deref(), Some("5"));
    }

    #[test]
    fn reinvite_is_relayed_with_sdp_anchored_and_acked_by_us() {
        let mut h = Harness::new();
        let (b_invite, ok) = answered_call(&mut h);
        h.core.poll_change();
        let a_tag = MessageIds::of(&ok).to_tag.expect("tag");
        let hold = SDP_A.replace("a=sendrecv", "a=sendonly");
        let reinvite = with_sdp(
            &format!(
                "INVITE sip:b2bua@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa3\nMax-Forwards: 70\n\
From: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>;tag={a_tag}\n\
Call-ID: a-leg-call\nCSeq: 2 INVITE\nContact: <sip:a@{A}>\n"
            ),
            &hold,
        );
        let out = h.deliver(A, &reinvite);
        let relayed = requests(&out, B1)[0].clone();
        assert_eq!(relayed.method, Method::Invite);
        assert_eq!(header(&relayed, "Call-ID"), header(&b_invite, "Call-ID"));
        let body = String::from_utf8(relayed.body.clone()).expect("utf8");
        assert!(
            body.contains("a=sendonly") && body.contains("m=audio 16002"),
            "{body}"
        );
        let answer = SDP_B.replace("a=sendrecv", "a=recvonly");
        let out = h.deliver(B1, &b_response(&relayed, 200, "bt", Some(&answer)));
        assert_eq!(requests(&out, B1)[0].method, Method::Ack, "we ACK leg B");
        assert_eq!(responses(&out, A), vec![200]);
        assert!(matches!(h.core.poll_change(), Some(Change::Upsert(_))));
    }

    /// A re-INVITE from A with `direction`, answered by B; returns what went out.
    fn reinvite_from_a(h: &mut Harness, a_tag: &str, cseq: u32, direction: &str) {
        let sdp = SDP_A.replace("a=sendrecv", &format!("a={direction}"));
        let reinvite = with_sdp(
            &format!(
                "INVITE sip:b2bua@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKre{cseq}\nMax-Forwards: 70\n\
From: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>;tag={a_tag}\n\
Call-ID: a-leg-call\nCSeq: {cseq} INVITE\nContact: <sip:a@{A}>\n"
            ),
            &sdp,
        );
        let out = h.deliver(A, &reinvite);
        let relayed = requests(&out, B1)[0].clone();
        let answer = SDP_B.replace(
            "a=sendrecv",
            &format!(
                "a={}",
                match direction {
                    "sendonly" => "recvonly",
                    other => other,
                }
            ),
        );
        let out = h.deliver(B1, &b_response(&relayed, 200, "bt", Some(&answer)));
        assert_eq!(responses(&out, A), vec![200]);
    }

    #[test]
    fn answered_calls_are_recorded_to_every_recorder_and_one_refusing_spoils_nothing() {
        const R1: &str = "127.0.0.1:5100";
        const R2: &str = "127.0.0.1:5110";
        let mut h = Harness::new();
        h.core.router_mut().recorders = vec![addr(R1), addr(R2)];
        let out = h.deliver(A, &invite_from_a());
        let b_invite = requests(&out, B1)[0].clone();
        let out = h.deliver(B1, &b_response(&b_invite, 200, "bt", Some(SDP_B)));
        assert_eq!(responses(&out, A), vec![200]);
        // One recording session per recorder, both at once.
        let offer = |to: &str| {
            let sent = requests(&out, to);
            assert_eq!(sent.len(), 1, "one INVITE to {to}");
            sent[0].clone()
        };
        let (to_r1, to_r2) = (offer(R1), offer(R2));
        for invite in [&to_r1, &to_r2] {
            assert_eq!(invite.method, Method::Invite);
            assert_eq!(header(invite, "Require").as_deref(), Some("siprec"));
            assert!(header(invite, "Contact").unwrap().contains("+sip.src"));
            assert!(
                header(invite, "Content-Type")
                    .unwrap()
                    .starts_with("multipart/mixed;boundary=")
            );
            let body = String::from_utf8_lossy(&invite.body);
            assert!(
                body.contains("<sipSessionID>a-leg-call</sipSessionID>"),
                "{body}"
            );
            // The caller's stream leaves from our leg-B port, the callee's from leg A's.
            assert!(
                body.contains("m=audio 16002 RTP/AVP") && body.contains("m=audio 16000 RTP/AVP")
            );
        }
        assert_ne!(header(&to_r1, "Call-ID"), header(&to_r2, "Call-ID"));
        // R1 takes it; R2 refuses.
        let out = h.deliver(R1, &b_response(&to_r1, 200, "r1", Some(SRS_SDP)));
        assert_eq!(requests(&out, R1)[0].method, Method::Ack);
        let call = *h.core.media.recorded.keys().next().expect("media forked");
        assert_eq!(
            h.core.media.recorded[&call],
            vec![(Some(addr("127.0.0.1:30000")), Some(addr("127.0.0.1:30002")))]
        );
        h.deliver(R2, &b_response(&to_r2, 503, "r2", None));
        assert_eq!(h.core.stats().calls_active, 1, "the call carries on");
        // The callee hangs up: the recording that was taken gets BYE, the summary names it.
        let bye = bye_from_b(&b_invite, "bt", "z9hG4bKbyer");
        let out = h.deliver(B1, &bye);
        assert_eq!(requests(&out, R1)[0].method, Method::Bye);
        assert!(requests(&out, R2).is_empty());
        let summary = h.core.router_mut().summaries.pop().expect("summary");
        assert_eq!(summary.recordings, vec![header(&to_r1, "Call-ID").unwrap()]);
    }

    /// With keepalives on, each confirmed recording is asked with an in-dialog OPTIONS
    /// every interval: a recorder that stops answering loses its copy at the next one
    /// (media fork and summary), one that answers keeps it, one that answers 481 loses
    /// it at once; the call carries on throughout.
    #[test]
    fn a_recorder_that_stops_answering_mid_call_loses_its_copy() {
        const R1: &str = "127.0.0.1:5100";
        const R2: &str = "127.0.0.1:5110";
        const R3: &str = "127.0.0.1:5120";
        let every = Duration::from_secs(10);
        let mut h = Harness::new();
        h.core.config.recording_keepalive = Some(every);
        h.core.router_mut().recorders = vec![addr(R1), addr(R2), addr(R3)];
        let out = h.deliver(A, &invite_from_a());
        let b_invite = requests(&out, B1)[0].clone();
        let out = h.deliver(B1, &b_response(&b_invite, 200, "bt", Some(SDP_B)));
        let mut call_ids = Vec::new();
        for (recorder, tag) in [(R1, "r1"), (R2, "r2"), (R3, "r3")] {
            let invite = requests(&out, recorder)[0].clone();
            call_ids.push(header(&invite, "Call-ID").unwrap());
            h.deliver(recorder, &b_response(&invite, 200, tag, Some(SRS_SDP)));
        }
        let call = *h.core.media.recorded.keys().next().expect("media forked");
        assert_eq!(h.core.media.recorded[&call].len(), 3);
        // Nothing is asked before the interval.
        assert!(h.core.next_timer().is_some_and(|at| at >= h.now + every));
        let options_to = |h: &mut Harness| {
            h.now = h.core.next_timer().expect("a keepalive due");
            h.core.on_timer(h.now, &mut h.layer);
            let out = h.pump();
            [R1, R2, R3].map(|r| {
                let sent = requests(&out, r);
                assert!(sent.iter().all(|o| o.method == Method::Options), "{r}");
                sent.first().map(|o| (*o).clone())
            })
        };
        let answer = |h: &mut Harness, recorder: &str, options: &Request, status: u16| {
            let ok = b_response(options, status, "", None);
            h.deliver(recorder, &ok);
        };
        let [Some(o1), Some(o2), Some(o3)] = options_to(&mut h) else {
            panic!("an OPTIONS to every recorder")
        };
        assert_eq!(
            header(&o1, "Call-ID").as_ref(),
            Some(&call_ids[0]),
            "in its dialog"
        );
        answer(&mut h, R1, &o1, 200);
        answer(&mut h, R3, &o3, 481);
        // R3 no longer has it: lost at once. R2 says nothing.
        assert_eq!(h.core.media.recorded[&call].len(), 2);
        let _ = o2;
        let [Some(o1), None, None] = options_to(&mut h) else {
            panic!("R2 unanswered since the last one: lost, not asked again")
        };
        assert_eq!(h.core.media.recorded[&call].len(), 1, "only R1's fork left");
        assert_eq!(h.core.stats().recordings_lost, 2);
        assert_eq!(h.core.stats().calls_active, 1, "the call carries on");
        answer(&mut h, R1, &o1, 200);
        let bye = bye_from_b(&b_invite, "bt", "z9hG4bKbyek");
        let out = h.deliver(B1, &bye);
        assert_eq!(requests(&out, R1)[0].method, Method::Bye);
        assert!(requests(&out, R2).is_empty() && requests(&out, R3).is_empty());
        let summary = h.core.router_mut().summaries.pop().expect("summary");
        assert_eq!(summary.recordings, vec![call_ids[0].clone()]);
    }

    /// Calls ending all at once, within the shrink interval and with one call left up:
    /// the check each end would make is put off, and the core owes it as a timer, so
    /// the table a burst grew gives its room back though no call ends after it.
    #[test]
    fn a_burst_of_calls_ending_at_once_gives_its_room_back_a_second_later() {
        let mut h = Harness::new();
        let mut b_invites = Vec::new();
        for i in 0..2_000 {
            let invite = invite_from_a()
                .replace("a-leg-call", &format!("a-leg-call-{i}"))
                .replace("branch=z9hG4bKa1", &format!("branch=z9hG4bKa1-{i}"))
                .replace("tag=at", &format!("tag=at{i}"));
            let out = h.deliver(A, &invite);
            let b_invite = requests(&out, B1)[0].clone();
            h.deliver(B1, &b_response(&b_invite, 200, "bt", Some(SDP_B)));
            b_invites.push(b_invite);
        }
        assert_eq!(h.core.stats().calls_active, 2_000);
        let grown = h.core.calls.capacity();
        assert_eq!(h.core.next_timer(), None, "nothing owed yet");
        for (i, b_invite) in b_invites.iter().enumerate().skip(1) {
            h.deliver(B1, &bye_from_b(b_invite, "bt", &format!("z9hG4bKbye{i}")));
        }
        assert_eq!(h.core.stats().calls_active, 1);
        // Not shrunk yet (deleted slots count against `capacity` until a rehash).
        assert!(
            h.core.calls.capacity() > grown / 2,
            "checks within the second put off: {grown} -> {}",
            h.core.calls.capacity()
        );
        let owed = h
            .core
            .next_timer()
            .expect("the put-off check is owed as a timer");
        assert_eq!(owed, h.now + crate::util::SHRINK_EVERY);
        h.now = owed;
        h.core.on_timer(h.now, &mut h.layer);
        assert!(
            h.core.calls.capacity() < grown / 4,
            "{grown} -> {}",
            h.core.calls.capacity()
        );
        assert_eq!(h.core.next_timer(), None, "the check is paid");
    }

    #[test]
    fn past_the_calls_per_second_limit_new_invites_are_shed_at_once() {
        let mut h = Harness::new();
        h.core.config.max_calls_per_second = Some(2);
        let invite = |n: u32| {
            invite_from_a()
                .replace("a-leg-call", &format!("call-{n}"))
                .replace("z9hG4bKa1", &format!("z9hG4bKrate{n}"))
        };
        for n in 0..2 {
            let out = h.deliver(A, &invite(n));
            assert_eq!(requests(&out, B1).len(), 1, "call {n} admitted");
        }
        let out = h.deliver(A, &invite(2));
        assert_eq!(responses(&out, A), vec![100, 503]);
        let shed = out
            .iter()
            .find_map(|o| match o {
                Out::Response(_, r) if r.status_code.code() == 503 => header(r, "Retry-After"),
                _ => None,
            })
            .expect("503");
        assert_eq!(shed.trim(), "1");
        assert!(requests(&out, B1).is_empty(), "nothing went out on leg B");
        // A second later the window starts again.
        h.now += Duration::from_secs(1);
        let out = h.deliver(A, &invite(3));
        assert_eq!(requests(&out, B1).len(), 1);
        assert_eq!(h.core.stats().calls_active, 3);
    }

    #[test]
    fn silent_calls_are_hung_up_unless_on_hold() {
        let mut h = Harness::new();
        h.core.config.media_timeout = Some(Duration::from_secs(30));
        let (_, ok) = answered_call(&mut h);
        let a_tag = MessageIds::of(&ok).to_tag.expect("tag");
        let due = h.core.next_timer().expect("media is checked");
        h.now = due;
        h.core.on_timer(h.now, &mut h.layer);
        assert!(h.pump().is_empty(), "media flowing: nothing to do");
        // On hold, silence is expected.
        reinvite_from_a(&mut h, a_tag.as_str(), 2, "sendonly");
        h.core.media.silent = true;
        h.now += Duration::from_secs(60);
        h.core.on_timer(h.now, &mut h.layer);
        assert!(h.pump().is_empty(), "a held call stays up");
        assert_eq!(h.core.stats().calls_active, 1);
        // Resumed and still silent: both legs get BYE.
        reinvite_from_a(&mut h, a_tag.as_str(), 3, "sendrecv");
        h.now += Duration::from_secs(60);
        h.core.on_timer(h.now, &mut h.layer);
        let out = h.pump();
        // Leg A's BYE follows its route set (the Record-Route of A's INVITE).
        let byes = out
            .iter()
            .filter(|o| matches!(o, Out::Request(_, r) if r.method == Method::Bye))
            .count();
        assert_eq!(byes, 2, "one BYE per leg");
        assert_eq!(requests(&out, B1)[0].method, Method::Bye);
        assert_eq!(h.core.stats().calls_active, 0);
        assert_eq!(h.core.next_timer(), None, "no call left to check");
    }

    #[test]
    fn a_restored_call_carries_on_on_another_core() {
        let mut active = Harness::new();
        let (b_invite, _ok) = answered_call(&mut active);
        let Some(Change::Upsert(snapshot)) = active.core.poll_change() else {
            panic!("snapshot");
        };
        // The snapshot travels as JSON over the replication link.
        let wire = serde_json::to_string(&*snapshot).expect("json");
        let snapshot: CallSnapshot = serde_json::from_str(&wire).expect("json back");
        let mut standby = Harness::new();
        standby.core.restore(snapshot.clone()).expect("restore");
        assert_eq!(
            standby.core.media().open.get(&snapshot.call),
            snapshot.media.as_ref()
        );
        // The callee hangs up on the standby: 200 to B, BYE to A with the next CSeq.
        let b_call_id = header(&b_invite, "Call-ID").expect("call id");
        let from = header(&b_invite, "From").expect("from");
        let to = header(&b_invite, "To").expect("to");
        let bye = format!(
            "BYE sip:b2bua@{US} SIP/2.0\nVia: SIP/2.0/UDP {B1};branch=z9hG4bKb9\nMax-Forwards: 70\n\
From: {to};tag=bt\nTo: {from}\nCall-ID: {b_call_id}\nCSeq: 7 BYE\nContent-Length: 0\n\n"
        );
        let out = standby.deliver(B1, &bye);
        assert_eq!(responses(&out, B1), vec![200]);
        // Leg A's route set (its INVITE's Record-Route) decides where the BYE goes.
        let to_a = requests(&out, "10.9.9.9:5060");
        assert_eq!(to_a[0].method, Method::Bye);
        assert_eq!(
            header(to_a[0], "Route").as_deref(),
            Some("<sip:leak@10.9.9.9;lr>")
        );
        assert_eq!(header(to_a[0], "Call-ID").as_deref(), Some("a-leg-call"));
        assert_eq!(standby.core.stats().calls_active, 0);
        assert_eq!(standby.core.stats().calls_restored, 1);
    }
    #[test]
    fn a_cancel_crossing_leg_bs_answer_hangs_leg_b_up() {
        for cancel_first in [true, false] {
            let mut h = Harness::new();
            let out = h.deliver(A, &invite_from_a());
            let b_invite = requests(&out, B1)[0].clone();
            h.deliver(B1, &b_response(&b_invite, 180, "bt", None));
            let cancel = format!(
                "CANCEL sip:0142685300@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa1\nMax-Forwards: 70\n\
From: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>\nCall-ID: a-leg-call\n\
CSeq: 1 CANCEL\nContent-Length: 0\n\n"
            );
            let answer = b_response(&b_invite, 200, "bt", Some(SDP_B));
            let batch = if cancel_first {
                vec![(A, cancel), (B1, answer)]
            } else {
                vec![(B1, answer), (A, cancel)]
            };
            let out = h.deliver_batch(&batch);
            // Leg A's INVITE ends 487 and never gets a 200 (the 200 goes to the CANCEL).
            let invite_answers: Vec<u16> = out
                .iter()
                .filter_map(|o| match o {
                    Out::Response(d, r)
                        if *d == addr(A)
                            && header(r, "CSeq").is_some_and(|c| c.ends_with("INVITE")) =>
                    {
                        Some(r.status_code.code())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(invite_answers, vec![487], "cancel first: {cancel_first}");
            let methods: Vec<Method> = requests(&out, B1).iter().map(|r| r.method).collect();
            assert!(
                methods.contains(&Method::Ack),
                "leg B's 200 ACKed: {methods:?}"
            );
            assert!(methods.contains(&Method::Bye), "leg B hung up: {methods:?}");
            assert_eq!(
                h.core.stats().calls_active,
                0,
                "cancel first: {cancel_first}"
            );
            assert_eq!(h.core.router_mut().ended, 1);
        }
    }

    #[test]
    fn requests_still_relayed_when_a_call_ends_are_answered() {
        let mut h = Harness::new();
        let (b_invite, ok) = answered_call(&mut h);
        let a_tag = MessageIds::of(&ok).to_tag.expect("tag");
        let info = format!(
            "INFO sip:b2bua@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa5\nMax-Forwards: 70\n\
From: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>;tag={a_tag}\n\
Call-ID: a-leg-call\nCSeq: 2 INFO\nContent-Length: 0\n\n"
        );
        let out = h.deliver(A, &info);
        assert_eq!(
            requests(&out, B1)[0].method,
            Method::Info,
            "relayed; B never answers"
        );
        let b_call_id = header(&b_invite, "Call-ID").expect("call id");
        let from = header(&b_invite, "From").expect("from");
        let to = header(&b_invite, "To").expect("to");
        let bye = format!(
            "BYE sip:b2bua@{US} SIP/2.0\nVia: SIP/2.0/UDP {B1};branch=z9hG4bKb7\nMax-Forwards: 70\n\
From: {to};tag=bt\nTo: {from}\nCall-ID: {b_call_id}\nCSeq: 5 BYE\nContent-Length: 0\n\n"
        );
        let out = h.deliver(B1, &bye);
        let mut to_a = responses(&out, A);
        to_a.sort();
        assert_eq!(to_a, vec![487], "leg A's INFO answered when the call ended");
        assert_eq!(h.core.stats().calls_active, 0);
    }

    fn forked_call(h: &mut Harness) -> (Request, Request) {
        h.core.router_mut().fork = true;
        let out = h.deliver(A, &invite_from_a());
        let b1 = requests(&out, B1);
        let b2 = requests(&out, B2);
        assert_eq!((b1.len(), b2.len()), (1, 1), "both branches rung at once");
        assert_eq!(b1[0].uri.to_string(), format!("sip:desk-1@{B1}"));
        assert_eq!(b2[0].uri.to_string(), format!("sip:desk-2@{B2}"));
        assert_eq!(header(b1[0], "X-Desk").as_deref(), Some("desk-1"));
        assert_eq!(header(b2[0], "X-Desk").as_deref(), Some("desk-2"));
        (b1[0].clone(), b2[0].clone())
    }

    #[test]
    fn the_first_fork_to_answer_wins_and_the_others_are_cancelled_and_told() {
        let mut h = Harness::new();
        let (inv1, inv2) = forked_call(&mut h);
        let out = h.deliver(B1, &b_response(&inv1, 180, "t1", None));
        assert_eq!(responses(&out, A), vec![180]);
        let out = h.deliver(B2, &b_response(&inv2, 200, "t2", Some(SDP_B)));
        assert_eq!(
            responses(&out, A),
            vec![200],
            "the answer reaches the caller"
        );
        let answered_by = out.iter().find_map(|o| match o {
            Out::Response(_, r) if r.status_code.code() == 200 => header(r, ANSWERED_BY),
            _ => None,
        });
        assert_eq!(answered_by.as_deref(), Some("desk-2"));
        assert_eq!(requests(&out, B2)[0].method, Method::Ack);
        let cancel = requests(&out, B1);
        assert_eq!(cancel.len(), 1);
        assert_eq!(
            cancel[0].method,
            Method::Cancel,
            "the other branch stops ringing"
        );
        let cancel = cancel[0].clone();
        h.deliver(B1, &b_response(&cancel, 200, "t1", None));
        let out = h.deliver(B1, &b_response(&inv1, 487, "t1", None));
        let sent = requests(&out, B1);
        let message = sent
            .iter()
            .find(|r| r.method == Method::Message)
            .expect("a MESSAGE to the cancelled branch");
        assert_eq!(message.uri.to_string(), format!("sip:desk-1@{B1}"));
        assert_eq!(
            header(*message, "Call-ID"),
            header(&inv1, "Call-ID"),
            "on the Call-ID of the INVITE it was offered"
        );
        let body = String::from_utf8_lossy(&message.body);
        assert!(body.contains("line: 7100"), "{body}");
        assert!(body.contains("answered-by: desk-2"), "{body}");
        assert!(sent.iter().any(|r| r.method == Method::Ack), "487 ACKed");
        assert_eq!(h.core.stats().calls_answered, 1);
        assert_eq!(h.core.stats().calls_active, 1);
    }

    #[test]
    fn a_forked_call_fails_only_when_every_branch_has_with_the_best_failure() {
        let mut h = Harness::new();
        let (inv1, inv2) = forked_call(&mut h);
        let out = h.deliver(B1, &b_response(&inv1, 480, "t1", None));
        assert!(responses(&out, A).is_empty(), "desk-2 still rings");
        let out = h.deliver(B2, &b_response(&inv2, 486, "t2", None));
        assert_eq!(responses(&out, A), vec![486], "busy beats unavailable");
        assert_eq!(h.core.stats().calls_active, 0);
        let summary = h.core.router_mut().summaries.pop().expect("summary");
        assert_eq!(summary.status, 486);
        assert_eq!(summary.answered_by, None);
        assert_eq!(summary.calling, "0140000000");
        assert_eq!(summary.called, "0142685300");
    }

    #[test]
    fn a_second_fork_answering_is_acked_and_hung_up() {
        let mut h = Harness::new();
        let (inv1, inv2) = forked_call(&mut h);
        let out = h.deliver(B1, &b_response(&inv1, 200, "t1", Some(SDP_B)));
        assert_eq!(responses(&out, A), vec![200]);
        let out = h.deliver(B2, &b_response(&inv2, 200, "t2", Some(SDP_B)));
        let methods: Vec<Method> = requests(&out, B2).iter().map(|r| r.method).collect();
        assert!(methods.contains(&Method::Ack), "{methods:?}");
        assert!(methods.contains(&Method::Bye), "{methods:?}");
        assert!(responses(&out, A).is_empty(), "the caller hears one answer");
        // BYE from the winner ends the call; the summary names who answered.
        let b_bye = bye_from_b(&inv1, "t1", "z9hG4bKbye1");
        let out = h.deliver(B1, &b_bye);
        assert_eq!(responses(&out, B1), vec![200]);
        let summary = h.core.router_mut().summaries.pop().expect("summary");
        assert_eq!(summary.status, 200);
        assert_eq!(summary.answered_by.as_deref(), Some("desk-1"));
        assert!(summary.answered_unix_ms.is_some());
    }

    #[test]
    fn a_cancel_stops_every_branch_and_refusals_are_summarised() {
        let mut h = Harness::new();
        let (inv1, _) = forked_call(&mut h);
        let cancel = format!(
            "CANCEL sip:0142685300@{US} SIP/2.0\nVia: SIP/2.0/UDP {A};branch=z9hG4bKa1\n\
Max-Forwards: 70\nFrom: <sip:0140000000@127.0.0.1>;tag=at\nTo: <sip:0142685300@127.0.0.1>\n\
Call-ID: a-leg-call\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
        );
        // Provisional answers first, so both branches can be cancelled at once.
        h.deliver(B1, &b_response(&inv1, 180, "t1", None));
        let out = h.deliver(A, &cancel);
        assert!(responses(&out, A).contains(&487));
        assert_eq!(requests(&out, B1)[0].method, Method::Cancel);
        h.core.router_mut().refuse = true;
        let second = invite_from_a().replace("a-leg-call", "second-call");
        let out = h.deliver(A, &second.replace("z9hG4bKa1", "z9hG4bKa2"));
        assert_eq!(responses(&out, A), vec![100, 403]);
        let summary = h
            .core
            .router_mut()
            .summaries
            .pop()
            .expect("refusal summary");
        assert_eq!(
            (summary.status, summary.call_id.as_str()),
            (403, "second-call")
        );
    }
}
