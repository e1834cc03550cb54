//! The transaction layer, sans-IO (RFC 3261 §17, with RFC 6026's Accepted state).
//!
//! Feed it what arrives ([`TransactionLayer::handle_datagram`]) and what the clock did
//! ([`TransactionLayer::handle_timeout`]); tell it what the transaction user (TU) wants
//! ([`TransactionLayer::send_request`], [`TransactionLayer::respond`],
//! [`TransactionLayer::cancel`]); drain [`TransactionLayer::poll_transmit`] and
//! [`TransactionLayer::poll_event`], and sleep until [`TransactionLayer::poll_timeout`].
//! Nothing here reads a clock or a socket, so retransmissions, timeouts and the
//! CANCEL-versus-200 race are tested on a virtual clock (see `tests.rs`).
//!
//! Beyond §17 proper, the layer also
//! - answers CANCEL itself (§9.2: 200 to the CANCEL, 487 to the INVITE, or 481),
//! - retransmits a UAS's 2xx until the ACK arrives (§13.3.1.4, the UAS core's duty,
//!   kept here so every TU gets it right), and
//! - sheds load: past `max_server_transactions`, new requests get 503 + Retry-After
//!   statelessly instead of queueing.

mod deadlines;
mod state;
#[cfg(test)]
mod tests;

use crate::util::FastMap;
use deadlines::Deadlines;
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::sip::{
    Header, HeadersExt, Method, Request, Response,
    headers::untyped::{CSeq, ContentLength, MaxForwards, RetryAfter, Via},
};

use super::framing::{MAX_DATAGRAM, ToWire};
use super::ids::{CallId, MessageIds, Tag, method_name};
use super::ingress::{Inbound, parse_datagram_with_ids};
use super::reply::{ResponseHead, carried_tag, response_to, response_wire, with_header};
use crate::error::Error;
pub use state::{ClientState, ServerState, Timer};

/// RFC 3261 timer values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
    /// How long a client INVITE may stay in Proceeding without a final response
    /// (Timer C, > 3 min; §16.6). Restarted by every provisional response.
    pub timer_c: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
        }
    }
}

/// Layer settings.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    pub timers: TimerConfig,
    /// Server transactions in progress at once (requests the TU has not given a final
    /// response yet) before new out-of-dialog requests get 503; in-dialog requests may
    /// use twice as many. Transactions lingering after their final response (64·T1 to
    /// absorb retransmissions: two a call for 32 s) are not counted: they are work
    /// done, and counting them capped a sustained call rate at limit / 64 s.
    pub max_server_transactions: usize,
    /// Transactions alive at once, lingering ones included, before new out-of-dialog
    /// requests get 503 (in-dialog requests: twice as many): a memory guard against a
    /// flood of requests answered at once, each of which lingers 32 s. About 1 KB
    /// each; the default of 2,000,000 is ~2 GB, and a call leaves ~3 for 32 s, so it
    /// is reached near 20,000 calls/s sustained.
    pub max_transactions: usize,
    /// Seconds put in Retry-After when shedding load.
    pub retry_after_secs: u32,
    /// Send 100 Trying as soon as an INVITE arrives (§17.2.1 allows it always).
    pub auto_trying: bool,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            max_server_transactions: 200_000,
            max_transactions: 2_000_000,
            retry_after_secs: 5,
            auto_trying: true,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Identifies one transaction for the TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u64);

/// What the layer tells the TU.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new request; answer it with [`TransactionLayer::respond`] and `id`.
    Request {
        id: TransactionId,
        source: SocketAddr,
        request: Request,
        /// The request's identifiers, read once by the layer.
        ids: MessageIds,
    },
    /// An ACK outside any transaction: the ACK for a 2xx (§13.2.2.4 / §13.3.1.4).
    /// `answered` is true when it matched a 2xx this layer was retransmitting.
    Ack {
        source: SocketAddr,
        request: Request,
        answered: bool,
        ids: MessageIds,
    },
    /// The peer cancelled an INVITE; the layer has answered it 487.
    Cancelled { invite: TransactionId },
    /// A response to one of the TU's requests (2xx retransmissions included: the TU
    /// ACKs each, §13.2.2.4).
    Response {
        id: TransactionId,
        response: Response,
        ids: MessageIds,
    },
    /// A 2xx to an INVITE that matches no transaction (any more).
    Stray2xx { response: Response, ids: MessageIds },
    /// Timer B, F or H fired: no final response / no ACK.
    Timeout { id: TransactionId },
    /// A UAS 2xx was retransmitted for 64·T1 without an ACK (§13.3.1.4: send BYE).
    AckTimeout { id: TransactionId },
}

/// Counters the drivers export as metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerStats {
    pub requests_received: u64,
    pub responses_received: u64,
    pub retransmissions_sent: u64,
    pub retransmissions_absorbed: u64,
    pub rejected_malformed: u64,
    pub rejected_overload: u64,
    pub timeouts: u64,
}

/// Transaction key (§17.1.3, §17.2.3). RFC 2543 requests without a magic-cookie
/// branch are keyed by Call-ID, From tag, CSeq number and sent-by instead.
///
/// One string holding side, method (a token, ended by NUL), sent-by (after its
/// length) and branch, and the hash of that string, computed once: under call load
/// the key table holds a million transactions (those lingering for 64·T1 included),
/// and each time it grows hashbrown moves every entry to where its hash says. Small
/// entries (a key of three `String`s made them 88 bytes; with its id now 32) and a
/// hash read from the entry, not from a string elsewhere in memory, keep that move
/// short: rehashing strings stalled the SIP core for over 100 ms at 10,000 calls/s,
/// long enough for the ingress queue to fill and new calls to be refused. The hash is
/// seeded per process, so a sender cannot choose colliding branches.
///
/// A message's key is written into the layer's scratch buffer ([`KeyText`]) and
/// looked up from there; only a new transaction's key is copied into the table, and
/// the transaction keeps just its hash (its entry is found again by hash and id).
#[derive(Debug)]
struct Key {
    hash: u64,
    text: Box<str>,
}

/// A message's transaction key, written in a reused buffer: what is looked up.
#[derive(Debug, Default)]
struct KeyText {
    text: String,
    hash: u64,
}

impl KeyText {
    /// Writes the key of a message with `ids` and `method`, on the server or client
    /// side; false (and nothing usable written) when `ids` lack what the key needs.
    fn write(&mut self, ids: &MessageIds, method: &str, server: bool) -> bool {
        use std::fmt::Write as _;
        let key = &mut self.text;
        key.clear();
        let method = if method == "ACK" { "INVITE" } else { method };
        key.push(if server { 'S' } else { 'C' });
        key.push_str(method);
        key.push('\0');
        // The client side only ever matches its own branches. Sent-by goes with its
        // length: no byte it might hold can move the line between it and the branch.
        let sent_by = if server {
            ids.sent_by.as_deref().unwrap_or_default()
        } else {
            ""
        };
        // Writing into a String cannot fail.
        let _ = write!(key, "{}:", sent_by.len());
        key.extend(sent_by.chars().map(|c| c.to_ascii_lowercase()));
        match &ids.branch {
            Some(b) if b.is_rfc3261() => key.push_str(b.as_str()),
            _ => {
                let (Some(call_id), Some((cseq, _))) = (&ids.call_id, &ids.cseq) else {
                    return false;
                };
                let _ = write!(
                    key,
                    "rfc2543;{};{};{}",
                    call_id.as_str(),
                    ids.from_tag.as_ref().map(Tag::as_str).unwrap_or(""),
                    cseq
                );
            }
        }
        static SEED: std::sync::LazyLock<foldhash::fast::RandomState> =
            std::sync::LazyLock::new(foldhash::fast::RandomState::default);
        self.hash = std::hash::BuildHasher::hash_one(&*SEED, key.as_str());
        true
    }

    /// Writes the key of a message (as [`Self::write`]) and finds its transaction in
    /// `table`; `None` as well when `ids` lack what the key needs.
    fn lookup(
        &mut self,
        ids: &MessageIds,
        method: &str,
        server: bool,
        table: &HashTable<(Key, TransactionId)>,
    ) -> Option<TransactionId> {
        if self.write(ids, method, server) {
            self.find(table)
        } else {
            None
        }
    }

    /// The transaction in `table` with this key.
    fn find(&self, table: &HashTable<(Key, TransactionId)>) -> Option<TransactionId> {
        table
            .find(self.hash, |(key, _)| {
                key.hash == self.hash && *key.text == *self.text
            })
            .map(|&(_, id)| id)
    }

    /// The key, owned, for the table.
    fn to_key(&self) -> Key {
        Key {
            hash: self.hash,
            text: self.text.as_str().into(),
        }
    }
}

#[derive(Debug)]
enum Role {
    Client(ClientState),
    Server(ServerState),
}

impl Role {
    /// A server transaction whose final response the TU has not sent yet.
    fn is_server_in_progress(&self) -> bool {
        matches!(
            self,
            Role::Server(ServerState::Trying | ServerState::Proceeding)
        )
    }
}

/// Which of a transaction's timers are set, and to which deadline: each as a stamp,
/// the deadline in milliseconds since the layer started (wrapping; 0: not set). A
/// deadline taken from the queue fires only if its transaction still holds its stamp.
/// Thirteen stamps take 52 bytes where thirteen `Option<Instant>`s took 208, in each
/// of the million transactions a busy TPO keeps lingering. Deadlines of one timer
/// within the same millisecond share a stamp (the earlier fires for both, less than a
/// millisecond early), as do deadlines 2^32 ms (49 days) apart, which no timer spans.
#[derive(Debug, Clone, Copy, Default)]
struct Armed([u32; Timer::COUNT]);

impl Armed {
    fn stamp(epoch: Instant, at: Instant) -> u32 {
        // Truncation is the point: stamps wrap every 2^32 ms.
        let stamp = (at.saturating_duration_since(epoch).as_millis() as u32).wrapping_add(1);
        stamp.max(1)
    }

    fn set(&mut self, timer: Timer, stamp: u32) {
        self.0[timer as usize] = stamp;
    }

    fn clear(&mut self, timer: Timer) {
        self.0[timer as usize] = 0;
    }

    fn is(&self, timer: Timer, stamp: u32) -> bool {
        self.0[timer as usize] == stamp
    }

    fn is_set(&self, timer: Timer) -> bool {
        self.0[timer as usize] != 0
    }
}

#[derive(Debug)]
struct Transaction {
    /// Its key's hash: its entry in the key table is found by hash and id.
    key_hash: u64,
    role: Role,
    invite: bool,
    /// Where our messages for this transaction go.
    peer: SocketAddr,
    /// A client's request, whole (CANCEL and ACK are built from it; shared with the TU
    /// that keeps it too; `None` for a request sent already written,
    /// [`TransactionLayer::send_request_wire`], which no INVITE is). The transaction
    /// lets go of it once its final response is received: what lingers for Timers
    /// J/L/M/D/K is the key's hash and at most the bytes to resend (a response, an
    /// ACK), so 64·T1 of lingering state stays small; behind a pointer, so a lingering
    /// transaction does not carry the room of one (216 bytes of the 576 a transaction
    /// took; with its timers as stamps it takes 212).
    request: Option<Arc<Request>>,
    /// A server's: what a response copies of its request ([`ResponseHead`]), until its
    /// final response is sent.
    head: Option<ResponseHead>,
    /// Accepted server INVITE: its (Call-ID, CSeq) entry in `accepted`.
    accepted_key: Option<(CallId, u32)>,
    /// What to resend: the request (client, until a final) or its ACK (client INVITE
    /// after a non-2xx final), the last response (server).
    last_sent: Option<Vec<u8>>,
    /// Status of the last response sent or received.
    last_status: u16,
    interval: Duration,
    /// Which timers are set, to which deadline.
    armed: Armed,
    /// Client INVITE: CANCEL asked for before any provisional arrived (§9.1).
    cancel_pending: bool,
    /// Client INVITE: a CANCEL went out; Timer B now bounds the wait for a final.
    cancel_sent: bool,
    /// Server: the To tag of the responses sent so far, reused for the 487 that a
    /// CANCEL triggers so the caller sees one early dialog, not two.
    local_tag: Option<Tag>,
}

impl Transaction {
    /// A transaction in `role` with `peer`, keeping `request` and what it sent last,
    /// retransmitting first after `interval`; its key's hash is set as it is inserted.
    fn new(
        role: Role,
        invite: bool,
        peer: SocketAddr,
        request: Option<Arc<Request>>,
        last_sent: Option<Vec<u8>>,
        interval: Duration,
    ) -> Self {
        Self {
            key_hash: 0,
            role,
            invite,
            peer,
            request,
            head: None,
            accepted_key: None,
            last_sent,
            last_status: 0,
            interval,
            armed: Armed::default(),
            cancel_pending: false,
            cancel_sent: false,
            local_tag: None,
        }
    }
}

/// The transaction layer. See the module docs for how to drive it.
#[derive(Debug)]
pub struct TransactionLayer {
    config: LayerConfig,
    next_id: u64,
    /// Boxed: a transaction is a few hundred bytes, and the table moves its values
    /// whenever it grows.
    transactions: FastMap<TransactionId, Box<Transaction>>,
    by_key: HashTable<(Key, TransactionId)>,
    /// Scratch for the key of the message at hand.
    key_text: KeyText,
    /// Accepted server INVITEs by (Call-ID, CSeq number), to match the 2xx's ACK.
    accepted: FastMap<(CallId, u32), TransactionId>,
    /// Server transactions still waiting for the TU's final response.
    server_pending: usize,
    timers: Deadlines<(TransactionId, Timer)>,
    /// What transactions' timer stamps count from.
    epoch: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: LayerStats,
    shrink_pace: crate::util::ShrinkPace,
}

/// How a CANCEL request fared (§9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The CANCEL went out as its own transaction.
    Sent(TransactionId),
    /// No provisional yet: the CANCEL goes out when one arrives.
    Pending,
    /// A final response was already received (or no such INVITE): nothing to cancel.
    TooLate,
}

impl TransactionLayer {
    /// A layer with the given settings.
    pub fn new(config: LayerConfig) -> Self {
        Self {
            config,
            next_id: 1,
            transactions: FastMap::default(),
            by_key: HashTable::new(),
            key_text: KeyText::default(),
            accepted: FastMap::default(),
            server_pending: 0,
            timers: Deadlines::default(),
            epoch: Instant::now(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: LayerStats::default(),
            shrink_pace: Default::default(),
        }
    }

    /// Gives back the room a burst left in the tables: a table four times larger than
    /// what it holds is shrunk to twice that. A map keeps its capacity otherwise, and
    /// transactions are big, so a busy minute would hold its peak for good.
    fn shrink_tables(&mut self) {
        crate::util::shrink_map(&mut self.transactions);
        if let Some(capacity) =
            crate::util::shrunk_capacity(self.by_key.len(), self.by_key.capacity())
        {
            self.by_key.shrink_to(capacity, |(key, _)| key.hash);
        }
        crate::util::shrink_map(&mut self.accepted);
        self.timers.shrink();
    }

    /// Counters since start.
    pub fn stats(&self) -> LayerStats {
        self.stats
    }

    /// Transactions alive (client and server).
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek()
    }

    /// State of a client transaction, for tests and diagnostics.
    pub fn client_state(&self, id: TransactionId) -> Option<ClientState> {
        match self.transactions.get(&id)?.role {
            Role::Client(s) => Some(s),
            Role::Server(_) => None,
        }
    }

    /// State of a server transaction, for tests and diagnostics.
    pub fn server_state(&self, id: TransactionId) -> Option<ServerState> {
        match self.transactions.get(&id)?.role {
            Role::Server(s) => Some(s),
            Role::Client(_) => None,
        }
    }

    /// One datagram from `source`: parsed, validated, matched.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        match parse_datagram_with_ids(datagram) {
            Ok((inbound, ids)) => self.handle_parsed(now, source, inbound, ids),
            Err(rejection) => {
                self.stats.rejected_malformed += 1;
                tracing::debug!(%source, detail = %rejection.detail, status = ?rejection.status, "rejected SIP message");
                if let Some(response) = rejection.response() {
                    self.transmit(source, response.to_wire());
                }
            }
        }
    }

    /// A message already parsed (by a stream transport, say).
    pub fn handle_inbound(&mut self, now: Instant, source: SocketAddr, inbound: Inbound) {
        let ids = match &inbound {
            Inbound::Request(request) => MessageIds::of(request),
            Inbound::Response(response) => MessageIds::of(response),
            Inbound::KeepAlive => return,
        };
        self.handle_parsed(now, source, inbound, ids);
    }

    /// A message parsed with its identifiers ([`parse_datagram_with_ids`]: read once,
    /// by whoever parsed it).
    pub fn handle_parsed(
        &mut self,
        now: Instant,
        source: SocketAddr,
        inbound: Inbound,
        ids: MessageIds,
    ) {
        match inbound {
            Inbound::Request(request) => self.handle_request(now, source, request, ids),
            Inbound::Response(response) => self.handle_response(now, response, ids),
            Inbound::KeepAlive => {}
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        request: Request,
        ids: MessageIds,
    ) {
        self.stats.requests_received += 1;
        if !self.key_text.write(&ids, method_name(request.method), true) {
            return;
        }
        let matched = self.key_text.find(&self.by_key);
        // An ACK outside any transaction is the ACK for a 2xx. So is one that matches an
        // Accepted INVITE (an RFC 2543 peer, or a UA reusing the INVITE's branch): RFC
        // 6026 §7.1 hands it to the TU.
        let ack_for_2xx = request.method == Method::Ack
            && matched.is_none_or(|id| self.server_state(id) == Some(ServerState::Accepted));
        if let (Some(id), false) = (matched, ack_for_2xx) {
            self.server_retransmission(now, id, &request);
            return;
        }
        if ack_for_2xx {
            let answered = self.match_2xx_ack(&ids);
            self.events.push_back(Event::Ack {
                source,
                request,
                answered,
                ids,
            });
            return;
        }
        // In-dialog requests (a To tag: BYE, re-INVITE…) and CANCEL may use up to twice
        // the limit: under load, calls can still end or be cancelled while new ones are
        // refused.
        let spared = ids.to_tag.is_some() || request.method == Method::Cancel;
        let allowance = |limit: usize| match spared {
            true => limit.saturating_mul(2),
            false => limit,
        };
        if self.server_pending >= allowance(self.config.max_server_transactions)
            || self.transactions.len() >= allowance(self.config.max_transactions)
        {
            self.stats.rejected_overload += 1;
            let response = with_header(
                response_to(&request, 503, Some(&Tag::generate())),
                Header::RetryAfter(RetryAfter::new(self.config.retry_after_secs.to_string())),
            );
            self.transmit(source, response.to_wire());
            return;
        }
        let invite = request.method == Method::Invite;
        let is_cancel = request.method == Method::Cancel;
        let key = self.key_text.to_key();
        let role = Role::Server(if invite {
            ServerState::Proceeding
        } else {
            ServerState::Trying
        });
        let t1 = self.config.timers.t1;
        let mut t = Transaction::new(role, invite, source, None, None, t1);
        t.head = Some(ResponseHead::of(&request));
        let id = self.insert(key, t);
        if is_cancel {
            self.server_cancel(now, id, &ids);
            return;
        }
        if invite && self.config.auto_trying {
            // Cannot fail: 100 Trying to a request that fitted in a datagram.
            let _ = self.respond_to(now, id, &request, 100, None);
        }
        self.events.push_back(Event::Request {
            id,
            source,
            request,
            ids,
        });
    }

    /// §9.2: CANCEL matches the INVITE server transaction with the same key. The 200
    /// to the CANCEL goes out first, then the INVITE's 487 (the order peers expect).
    fn server_cancel(&mut self, now: Instant, cancel_id: TransactionId, ids: &MessageIds) {
        let invite_id = self.key_text.lookup(ids, "INVITE", true, &self.by_key);
        let invite_tag = invite_id
            .and_then(|id| self.transactions.get(&id))
            .and_then(|t| t.local_tag.clone());
        // §9.2: the 200 to the CANCEL carries the To tag of the INVITE's responses.
        let tag = invite_tag.unwrap_or_else(Tag::generate);
        let status = if invite_id.is_some() { 200 } else { 481 };
        let _ = self.respond_from_head(now, cancel_id, status, Some(&tag), &[], None);
        let Some(invite_id) = invite_id else {
            return;
        };
        let proceeding = self.transactions.get(&invite_id).is_some_and(|invite| {
            matches!(invite.role, Role::Server(ServerState::Proceeding)) && invite.head.is_some()
        });
        if proceeding {
            let _ = self.respond_from_head(now, invite_id, 487, Some(&tag), &[], None);
            self.events
                .push_back(Event::Cancelled { invite: invite_id });
        }
    }

    fn match_2xx_ack(&mut self, ids: &MessageIds) -> bool {
        let (Some(call_id), Some((cseq, _))) = (&ids.call_id, &ids.cseq) else {
            return false;
        };
        let Some(id) = self.accepted.remove(&(call_id.clone(), *cseq)) else {
            return false;
        };
        if let Some(t) = self.transactions.get_mut(&id) {
            // Stop retransmitting the 2xx; Timer L keeps absorbing INVITE copies, and
            // absorbs them without an answer now (RFC 6026 §8.7): the 2xx, kept for
            // 64·T1 otherwise, is let go.
            t.armed.clear(Timer::G);
            t.last_sent = None;
        }
        true
    }

    fn server_retransmission(&mut self, now: Instant, id: TransactionId, request: &Request) {
        let Some(t) = self.transactions.get_mut(&id) else {
            return;
        };
        let Role::Server(state) = t.role else {
            return;
        };
        if request.method == Method::Ack {
            if state == ServerState::Completed {
                t.role = Role::Server(ServerState::Confirmed);
                t.armed.clear(Timer::G);
                t.armed.clear(Timer::H);
                // Timer I = T4 over UDP (§17.2.1).
                let t4 = self.config.timers.t4;
                self.schedule(id, Timer::I, now, t4);
            }
            self.stats.retransmissions_absorbed += 1;
            return;
        }
        self.stats.retransmissions_absorbed += 1;
        if let (Some(bytes), true) = (t.last_sent.clone(), state != ServerState::Trying) {
            let peer = t.peer;
            self.stats.retransmissions_sent += 1;
            self.transmit(peer, bytes);
        }
    }

    fn handle_response(&mut self, now: Instant, response: Response, ids: MessageIds) {
        self.stats.responses_received += 1;
        // §18.1.2: a response with more than one Via is not for a UA; discard it.
        if response.has_multiple_vias() {
            self.stats.rejected_malformed += 1;
            tracing::debug!("discarded a response with more than one Via");
            return;
        }
        let Some((_, method)) = &ids.cseq else {
            return;
        };
        let status = response.status_code.code();
        let id = self.key_text.lookup(&ids, method, false, &self.by_key);
        let Some(id) = id else {
            if method == "INVITE" && (200..300).contains(&status) {
                self.events.push_back(Event::Stray2xx { response, ids });
            }
            return;
        };
        let timers = self.config.timers;
        let Some(t) = self.transactions.get_mut(&id) else {
            return;
        };
        let Role::Client(state) = t.role else {
            return;
        };
        t.last_status = status;
        use ClientState::*;
        let next = match (t.invite, state, status) {
            (true, Calling | Proceeding, 100..=199) => Some(Proceeding),
            (true, Calling | Proceeding, 200..=299) => Some(Accepted),
            (true, Accepted, 200..=299) => None,
            (true, Calling | Proceeding, _) => Some(Completed),
            (true, Completed, 300..) => {
                // Retransmitted final: resend the ACK, tell nobody (§17.1.1.2).
                let Some(ack) = t.last_sent.clone() else {
                    return;
                };
                let peer = t.peer;
                self.stats.retransmissions_sent += 1;
                self.transmit(peer, ack);
                return;
            }
            (false, Trying | Proceeding, 100..=199) => Some(Proceeding),
            (false, Trying | Proceeding, 200..) => Some(Completed),
            _ => return,
        };
        if let Some(next) = next {
            t.role = Role::Client(next);
            match next {
                Proceeding if t.invite => {
                    t.armed.clear(Timer::A);
                    // Timer B stays only as the §9.1 guard of a CANCEL already sent.
                    if !t.cancel_sent {
                        t.armed.clear(Timer::B);
                    }
                    self.schedule(id, Timer::C, now, timers.timer_c);
                }
                Proceeding => {
                    // Timer E keeps firing, now at T2 (§17.1.2.2).
                    t.interval = timers.t2;
                }
                Accepted => {
                    t.armed = Armed::default();
                    // Lingering for Timer M only passes 2xx retransmissions on.
                    t.request = None;
                    t.last_sent = None;
                    self.schedule(id, Timer::M, now, 64 * timers.t1);
                }
                Completed if t.invite => {
                    t.armed = Armed::default();
                    // Lingering for Timer D needs only the ACK, for retransmitted
                    // finals: its bytes take the request's place.
                    let ack = t.request.take().map(|r| build_ack(&r, &response).to_wire());
                    t.last_sent = ack.clone();
                    let peer = t.peer;
                    if let Some(ack) = ack {
                        self.transmit(peer, ack);
                    }
                    // Timer D: at least 32 s over UDP.
                    self.schedule(
                        id,
                        Timer::D,
                        now,
                        Duration::from_secs(32).max(64 * timers.t1),
                    );
                }
                Completed => {
                    t.armed = Armed::default();
                    t.request = None;
                    t.last_sent = None;
                    self.schedule(id, Timer::K, now, timers.t4);
                }
                _ => {}
            }
        }
        let cancel_now = next == Some(Proceeding)
            && self
                .transactions
                .get_mut(&id)
                .is_some_and(|t| std::mem::take(&mut t.cancel_pending));
        self.events.push_back(Event::Response { id, response, ids });
        if cancel_now {
            let _ = self.cancel(now, id);
        }
    }

    /// Answers a server transaction from what it keeps of its request (the headers a
    /// response copies, §8.2.6.2), while it has not sent its final response: `status`,
    /// `to_tag` added (above 100) when the request's To has none, then `extra`
    /// headers and `body` (content type, bytes). For answers decided after the
    /// request's event (a relayed answer, a 487 or a 408). Fails when the transaction
    /// is gone, or keeps no request (a client's, or one answered finally).
    pub fn respond_from_head(
        &mut self,
        now: Instant,
        id: TransactionId,
        status: u16,
        to_tag: Option<&Tag>,
        extra: &[&Header],
        body: Option<(&str, &[u8])>,
    ) -> Result<(), Error> {
        let Some(head) = self.transactions.get(&id).and_then(|t| t.head.as_ref()) else {
            return Err(Error::MalformedSip(format!(
                "transaction {id:?} keeps no request to answer"
            )));
        };
        let bytes = head.response_wire(status, to_tag, extra, body);
        let tag = carried_tag(status, head.value("To").unwrap_or_default(), to_tag);
        self.respond_wire(now, id, status, tag, bytes)
    }

    /// Starts a client transaction for `request` (not ACK: see [`Self::send_stateless`]).
    /// A TU that keeps the request too (a B2BUA keeps its INVITE, to build the dialog
    /// from its answer) passes an `Arc` and shares it with the transaction instead of
    /// copying it.
    pub fn send_request(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        request: impl Into<Arc<Request>>,
    ) -> Result<TransactionId, Error> {
        let request: Arc<Request> = request.into();
        let bytes = request.to_wire();
        // Our own request: its branch is all a client key needs (§17.1.3); a request
        // without an RFC 3261 branch is keyed the long way.
        let ids = match crate::sip::ids::top_branch(&*request) {
            Some(branch) if branch.is_rfc3261() => MessageIds {
                branch: Some(branch),
                ..MessageIds::default()
            },
            _ => MessageIds::of(&*request),
        };
        let method = request.method;
        self.start_client(now, destination, method, &ids, bytes, Some(request))
    }

    /// Starts a client transaction for a request other than INVITE, already written
    /// for the wire with an RFC 3261 `branch` in its top Via (a BYE of a dialog,
    /// [`Dialog::request_wire`](crate::sip::dialog::Dialog::request_wire)). Only an
    /// INVITE's transaction needs the request itself (to build its CANCEL and the ACK
    /// of a non-2xx), so none is built for the others.
    pub fn send_request_wire(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        method: Method,
        branch: crate::sip::Branch,
        bytes: Vec<u8>,
    ) -> Result<TransactionId, Error> {
        if matches!(method, Method::Invite | Method::Ack) || !branch.is_rfc3261() {
            return Err(Error::MalformedSip(format!(
                "send_request_wire takes requests other than INVITE and ACK, with an RFC 3261 branch: {method} with {branch}"
            )));
        }
        let ids = MessageIds {
            branch: Some(branch),
            ..MessageIds::default()
        };
        self.start_client(now, destination, method, &ids, bytes, None)
    }

    /// Opens a client transaction for `bytes` (keyed by `ids`), sends them and sets its
    /// timers.
    fn start_client(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        method: Method,
        ids: &MessageIds,
        bytes: Vec<u8>,
        request: Option<Arc<Request>>,
    ) -> Result<TransactionId, Error> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(Error::MessageTooLarge {
                size: bytes.len(),
                limit: MAX_DATAGRAM,
            });
        }
        if !self.key_text.write(ids, method_name(method), false) {
            return Err(Error::MalformedSip(
                "request lacks Via branch, Call-ID or CSeq".into(),
            ));
        }
        // A branch a live transaction still holds (a TU reusing it) points to the
        // newest from now on, as a map's insert left it. The server side needs no such
        // check: it opens a transaction only for a key it found none for.
        if let Some(older) = self.key_text.find(&self.by_key) {
            self.unlink_key(self.key_text.hash, older);
        }
        let key = self.key_text.to_key();
        let invite = method == Method::Invite;
        let t1 = self.config.timers.t1;
        let role = Role::Client(if invite {
            ClientState::Calling
        } else {
            ClientState::Trying
        });
        let sent = Some(bytes.clone());
        let id = self.insert(
            key,
            Transaction::new(role, invite, destination, request, sent, t1),
        );
        self.transmit(destination, bytes);
        if invite {
            self.schedule(id, Timer::A, now, t1);
            self.schedule(id, Timer::B, now, 64 * t1);
        } else {
            self.schedule(id, Timer::E, now, t1);
            self.schedule(id, Timer::F, now, 64 * t1);
        }
        Ok(id)
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, §13.2.2.4).
    pub fn send_stateless(&mut self, destination: SocketAddr, bytes: Vec<u8>) -> Result<(), Error> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(Error::MessageTooLarge {
                size: bytes.len(),
                limit: MAX_DATAGRAM,
            });
        }
        self.transmit(destination, bytes);
        Ok(())
    }

    /// Cancels a client INVITE transaction (§9.1).
    pub fn cancel(&mut self, now: Instant, invite: TransactionId) -> CancelOutcome {
        let Some(t) = self.transactions.get_mut(&invite) else {
            return CancelOutcome::TooLate;
        };
        match t.role {
            Role::Client(ClientState::Calling) if t.invite => {
                t.cancel_pending = true;
                CancelOutcome::Pending
            }
            Role::Client(ClientState::Proceeding) if t.invite => {
                let Some(cancel) = t.request.as_deref().map(build_cancel) else {
                    return CancelOutcome::TooLate;
                };
                let peer = t.peer;
                t.cancel_sent = true;
                // §9.1: without a final response 64·T1 after the CANCEL, give up.
                let guard = 64 * self.config.timers.t1;
                self.schedule(invite, Timer::B, now, guard);
                match self.send_request(now, peer, cancel) {
                    Ok(id) => CancelOutcome::Sent(id),
                    Err(_) => CancelOutcome::TooLate,
                }
            }
            _ => CancelOutcome::TooLate,
        }
    }

    /// Sends `response` in server transaction `id`.
    pub fn respond(
        &mut self,
        now: Instant,
        id: TransactionId,
        response: Response,
    ) -> Result<(), Error> {
        let status = response.status_code.code();
        let bytes = response.to_wire();
        let tag = crate::sip::ids::to_tag(&response);
        self.respond_wire(now, id, status, tag, bytes)
    }

    /// Answers a server transaction's `request` with `status` and nothing more than
    /// a response copies of it (§8.2.6.2; `to_tag` added, for a status above 100,
    /// when its To has none):
    /// [`Self::respond`] with [`response_to`], written straight to bytes.
    pub fn respond_to(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &Request,
        status: u16,
        to_tag: Option<&Tag>,
    ) -> Result<(), Error> {
        let bytes = response_wire(request, status, to_tag, &[], None);
        let to = request.headers.iter().find_map(|h| match h {
            Header::To(to) => Some(to.value()),
            _ => None,
        });
        let tag = carried_tag(status, to.unwrap_or_default(), to_tag);
        self.respond_wire(now, id, status, tag, bytes)
    }

    /// [`Self::respond`] with a response already written for the wire
    /// ([`response_wire`](crate::sip::reply::response_wire)): its status and its To tag
    /// (which a CANCEL's 487 reuses) given alongside.
    pub fn respond_wire(
        &mut self,
        now: Instant,
        id: TransactionId,
        status: u16,
        to_tag: Option<Tag>,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(Error::MessageTooLarge {
                size: bytes.len(),
                limit: MAX_DATAGRAM,
            });
        }
        let timers = self.config.timers;
        let Some(t) = self.transactions.get_mut(&id) else {
            return Err(Error::MalformedSip(format!("no transaction {id:?}")));
        };
        let Role::Server(state) = t.role else {
            return Err(Error::MalformedSip(
                "respond() on a client transaction".into(),
            ));
        };
        use ServerState::*;
        let next = match (t.invite, state, status) {
            (true, Proceeding, 100..=199) => Proceeding,
            (true, Proceeding, 200..=299) => Accepted,
            (true, Accepted, 200..=299) => Accepted,
            (true, Proceeding, _) => Completed,
            (false, Trying | Proceeding, 100..=199) => Proceeding,
            (false, Trying | Proceeding, _) => Completed,
            _ => {
                return Err(Error::MalformedSip(format!(
                    "cannot send {status} in state {state:?}"
                )));
            }
        };
        if t.role.is_server_in_progress() && !Role::Server(next).is_server_in_progress() {
            self.server_pending -= 1;
        }
        t.role = Role::Server(next);
        if t.local_tag.is_none() {
            t.local_tag = to_tag;
        }
        t.last_sent = Some(bytes.clone());
        t.last_status = status;
        let peer = t.peer;
        if next == Accepted
            && state != Accepted
            && let Some(head) = &t.head
            && let (Some(call_id), Some((cseq, _))) = (
                head.value("Call-ID"),
                head.value("CSeq").and_then(crate::sip::ids::parse_cseq),
            )
        {
            let call_id = CallId::new(call_id.trim_ascii());
            let key = (call_id, cseq);
            t.accepted_key = Some(key.clone());
            self.accepted.insert(key, id);
        }
        if matches!(next, Accepted | Completed) {
            t.head = None;
        }
        if state != next || next == Completed {
            match next {
                Accepted if state != Accepted => {
                    t.interval = timers.t1;
                    self.schedule(id, Timer::G, now, timers.t1);
                    self.schedule(id, Timer::L, now, 64 * timers.t1);
                }
                Completed if t.invite => {
                    t.interval = timers.t1;
                    self.schedule(id, Timer::G, now, timers.t1);
                    self.schedule(id, Timer::H, now, 64 * timers.t1);
                }
                Completed => self.schedule(id, Timer::J, now, 64 * timers.t1),
                _ => {}
            }
        }
        self.transmit(peer, bytes);
        Ok(())
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, (id, timer))) = self.timers.pop_due(now) {
            let live = self
                .transactions
                .get(&id)
                .is_some_and(|t| t.armed.is(timer, Armed::stamp(self.epoch, at)));
            if live {
                self.fire(at, id, timer);
            }
        }
        // After the timers: the one that ends the last transaction finds the tables
        // empty and gives their room back at once (no timer may come after it).
        if self.shrink_pace.due(now, self.transactions.is_empty()) {
            self.shrink_tables();
        }
    }

    fn fire(&mut self, now: Instant, id: TransactionId, timer: Timer) {
        let timers = self.config.timers;
        let Some(t) = self.transactions.get_mut(&id) else {
            return;
        };
        t.armed.clear(timer);
        match timer {
            // Retransmit with doubling interval: A and G (INVITE) uncapped for A,
            // capped at T2 for E and G (§17.1.1.2, §17.1.2.2, §17.2.1).
            Timer::A | Timer::E | Timer::G => {
                let bytes = t.last_sent.clone();
                let peer = t.peer;
                t.interval = match timer {
                    Timer::A => t.interval * 2,
                    Timer::E if matches!(t.role, Role::Client(ClientState::Proceeding)) => {
                        timers.t2
                    }
                    _ => (t.interval * 2).min(timers.t2),
                };
                let interval = t.interval;
                if let Some(bytes) = bytes {
                    self.stats.retransmissions_sent += 1;
                    self.transmit(peer, bytes);
                }
                self.schedule(id, timer, now, interval);
            }
            Timer::B | Timer::C | Timer::F | Timer::H => {
                self.stats.timeouts += 1;
                self.remove(id);
                self.events.push_back(Event::Timeout { id });
            }
            Timer::L => {
                let unacked = t.armed.is_set(Timer::G);
                self.remove(id);
                if unacked {
                    self.stats.timeouts += 1;
                    self.events.push_back(Event::AckTimeout { id });
                }
            }
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::M => self.remove(id),
        }
    }

    /// Takes `t` on under `key` (its `key_hash` is set from it), a key no
    /// transaction holds.
    fn insert(&mut self, key: Key, mut t: Transaction) -> TransactionId {
        let id = TransactionId(self.next_id);
        self.next_id += 1;
        if t.role.is_server_in_progress() {
            self.server_pending += 1;
        }
        t.key_hash = key.hash;
        self.by_key
            .insert_unique(key.hash, (key, id), |(k, _)| k.hash);
        self.transactions.insert(id, Box::new(t));
        id
    }

    /// Takes transaction `id`'s entry, under its key's `hash`, out of the key table.
    fn unlink_key(&mut self, hash: u64, id: TransactionId) {
        if let Ok(entry) = self
            .by_key
            .find_entry(hash, |&(_, entry_id)| entry_id == id)
        {
            entry.remove();
        }
    }

    fn remove(&mut self, id: TransactionId) {
        if let Some(t) = self.transactions.remove(&id) {
            if t.role.is_server_in_progress() {
                self.server_pending -= 1;
            }
            self.unlink_key(t.key_hash, id);
            if let Some(k) = t.accepted_key
                && self.accepted.get(&k) == Some(&id)
            {
                self.accepted.remove(&k);
            }
        }
    }

    /// Sets `timer` of transaction `id` due `delay` after `from`.
    fn schedule(&mut self, id: TransactionId, timer: Timer, from: Instant, delay: Duration) {
        if let Some(t) = self.transactions.get_mut(&id) {
            let at = self.timers.push(from, delay, (id, timer));
            t.armed.set(timer, Armed::stamp(self.epoch, at));
        }
    }

    fn transmit(&mut self, destination: SocketAddr, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { destination, bytes });
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): same Request-URI, top Via,
/// Call-ID, From, CSeq number and Route as the INVITE; To from the response.
pub fn build_ack(invite: &Request, response: &Response) -> Request {
    let mut headers = crate::sip::framing::headers_with_room();
    let mut via_done = false;
    for header in invite.headers.iter() {
        match header {
            Header::Via(v) if !via_done => {
                via_done = true;
                let top = super::syntax::split_list(v.value())
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                headers.push(Header::Via(Via::new(top)));
            }
            Header::From(_) | Header::CallId(_) | Header::Route(_) => headers.push(header.clone()),
            Header::CSeq(c) => {
                let n = c
                    .value()
                    .split_whitespace()
                    .next()
                    .unwrap_or("1")
                    .to_owned();
                headers.push(Header::CSeq(CSeq::new(format!("{n} ACK"))));
            }
            _ => {}
        }
    }
    if let Some(to) = response.headers.iter().find(|h| matches!(h, Header::To(_))) {
        headers.push(to.clone());
    }
    headers.push(Header::MaxForwards(MaxForwards::new("70")));
    headers.push(Header::ContentLength(ContentLength::new("0")));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: invite.version,
        headers,
        body: Vec::new(),
    }
}

/// The CANCEL for an INVITE (§9.1): same Request-URI, Call-ID, To, From, CSeq number,
/// top Via and Route.
pub fn build_cancel(invite: &Request) -> Request {
    let mut ack = build_ack(invite, &Response::default());
    let to = invite
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned();
    let mut headers = crate::sip::framing::headers_with_room();
    for header in ack.headers.iter() {
        match header {
            Header::CSeq(c) => {
                let n = c
                    .value()
                    .split_whitespace()
                    .next()
                    .unwrap_or("1")
                    .to_owned();
                headers.push(Header::CSeq(CSeq::new(format!("{n} CANCEL"))));
            }
            Header::To(_) => {}
            Header::ContentLength(_) => {
                if let Some(to) = to.clone() {
                    headers.push(to);
                }
                headers.push(header.clone());
            }
            _ => headers.push(header.clone()),
        }
    }
    ack.headers = headers;
    ack.method = Method::Cancel;
    ack
}
