//! Where the TPO sends a new call (the B2BUA's [`Router`]).
//!
//! - The dialled number is looked up in the dial plan from the TSS (longest prefix
//!   wins): an internal number is a line, an external one goes to the SBC.
//! - A call to a line rings, all at once, every registered device of the users with a
//!   talk appearance of it, and every live peer TPO for the devices registered there;
//!   the first answer wins (the B2BUA cancels and tells the others).
//! - Seizing a private wire or an intercom (calling the number of a line of that kind
//!   the caller has a talk appearance of) rings the line's far end; an intercom's far
//!   end is asked to answer by itself.
//! - Calls come from registered turrets, from the SBC (inbound: the number is a line)
//!   or from a peer TPO (its number rings only devices registered here: no loops).
//!   Anyone else gets 403.
//!
//! Every call's end becomes a call record ([`CallRecord`]) on the spool channel.

use floorwire::util::FastMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use floorwire::sdp::Codec;
use floorwire::sip::b2bua::{CallSummary, Fork, Outbound, RecordingPlan, RouteRefusal, Router};
use floorwire::sip::msg::{Header, Request};
use floorwire::sip::siprec::{Participant, RecordingMetadata};
use floorwire::sip::syntax::{name_addr_user, sip_uri_user};
use floorwire::sip::uas::header_text;

use crate::call_records::CallRecord;
use crate::peers::PeerSet;
use crate::registrar::Registrar;
use crate::tss_client::{self, Line, Shared, TpoConfig};

/// Marks a call forked from a peer TPO: its value is the forking TPO's SIP address.
/// A TPO rings only its own devices for such a call, never its peers again.
pub const PEER_HEADER: &str = "X-Floorwire-Peer";

/// How a dialled number is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Internal,
    Sbc,
    Refuse,
}

/// The route for `number`: the longest matching prefix of the dial plan; numbers no
/// rule matches are internal.
pub fn dial_plan_route(config: &TpoConfig, number: &str) -> Route {
    config
        .dial_plan
        .iter()
        .filter(|r| number.starts_with(r.prefix.as_str()))
        .max_by_key(|r| r.prefix.len())
        .map(|r| match r.route.as_str() {
            "sbc" => Route::Sbc,
            "refuse" => Route::Refuse,
            _ => Route::Internal,
        })
        .unwrap_or(Route::Internal)
}

/// Line kinds whose seizure rings the far end.
fn rings_far_end(kind: &str) -> bool {
    matches!(kind, "private_wire_ard" | "private_wire_mrd" | "intercom")
}

/// Headers asking a turret to answer by itself (an intercom's far end): the
/// `Call-Info answer-after` and `Alert-Info` forms phones understand.
fn auto_answer_headers(local: SocketAddr) -> Vec<(String, String)> {
    vec![
        ("Call-Info".into(), format!("<sip:{local}>;answer-after=0")),
        (
            "Alert-Info".into(),
            "<http://127.0.0.1/auto-answer>;info=alert-autoanswer".into(),
        ),
    ]
}

fn refuse(status: u16, reason: impl Into<String>) -> RouteRefusal {
    RouteRefusal {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

/// Who placed a call, seen from the floor (the call record's `direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Inbound,
    Outbound,
    Internal,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Internal => "internal",
        }
    }
}

/// What the router learnt about a call while routing it, for its record.
#[derive(Debug, Clone)]
struct Routed {
    direction: Direction,
    /// The calling turret's user.
    user: Option<String>,
    /// The line called or seized.
    line: Option<String>,
    /// Whether the call gets a record here: not when the caller is unknown (a
    /// stranger's INVITE), nor for a peer's fork (the forking TPO records the call).
    recorded: bool,
}

/// How a line is rung.
#[derive(Debug, Clone, Copy)]
struct Ringing<'a> {
    /// The calling device, not rung itself.
    caller_device: Option<&'a str>,
    /// A peer's fork: ring devices registered here only.
    from_peer: bool,
    /// An intercom: the far end answers by itself.
    auto_answer: bool,
}

/// Where call records go: the spool writer's queue.
#[derive(Debug, Clone)]
pub struct RecordSink {
    pub queue: tokio::sync::mpsc::Sender<CallRecord>,
    pub metrics: crate::metrics::TpoMetrics,
}

impl RecordSink {
    /// Queues `record` for the spool; a full queue refuses it (counted and logged).
    pub fn send(&self, record: CallRecord) {
        if let Err(e) = self.queue.try_send(record) {
            self.metrics.call_record_spooled(false);
            tracing::error!(error = %e, "call record not queued for the spool");
        }
    }
}

/// The TPO's router.
#[derive(Debug)]
pub struct TpoRouter {
    pub registrar: Arc<Mutex<Registrar>>,
    pub config: Shared,
    /// The SBC: where external calls go, and whose calls are inbound.
    pub sbc: Option<SocketAddr>,
    /// Our address, for From/To hosts on leg B.
    pub local: SocketAddr,
    /// The other TPOs and which of them answer.
    pub peers: PeerSet,
    /// This TPO's name in its call records.
    pub name: String,
    pub records: Option<RecordSink>,
    /// Recorders for calls whose user's site names none.
    pub default_recorders: Vec<SocketAddr>,
    /// Calls being routed or up, by leg A's Call-ID.
    routed: FastMap<String, Routed>,
    next_record: u64,
}

/// A refusal's SIP status as a call record outcome.
fn outcome(summary: &CallSummary) -> &'static str {
    match summary.status {
        _ if summary.answered_unix_ms.is_some() => "answered",
        _ if summary.cancelled => "cancelled",
        486 | 600 => "busy",
        408 | 480 | 487 => "no_answer",
        403 | 404 | 484 | 488 | 603 => "refused",
        _ => "failed",
    }
}

/// Unix milliseconds as RFC 3339 UTC.
fn rfc3339(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

impl TpoRouter {
    pub fn new(
        registrar: Arc<Mutex<Registrar>>,
        config: Shared,
        sbc: Option<SocketAddr>,
        local: SocketAddr,
        peers: PeerSet,
        name: String,
        records: Option<RecordSink>,
    ) -> Self {
        Self {
            registrar,
            config,
            sbc,
            local,
            peers,
            name,
            records,
            default_recorders: Vec::new(),
            routed: FastMap::default(),
            next_record: u64::from(rand::random::<u32>()),
        }
    }

    /// The call's record from its summary and what routing learnt.
    fn record(&mut self, summary: &CallSummary, routed: Option<Routed>) -> CallRecord {
        let routed = routed.unwrap_or(Routed {
            direction: Direction::Internal,
            user: None,
            line: None,
            recorded: true,
        });
        self.next_record = self.next_record.wrapping_add(1);
        // Inbound calls are the answering user's (when a user of ours answered, not a
        // peer that did not say who); the others the caller's.
        let user = match routed.direction {
            Direction::Inbound => summary.answered_by.clone().filter(|party| {
                tss_client::current(&self.config)
                    .is_some_and(|c| c.devices_of(party).next().is_some())
            }),
            _ => routed.user,
        };
        CallRecord {
            record_id: format!(
                "{}-{:013}-{:08x}",
                self.name, summary.started_unix_ms, self.next_record as u32
            ),
            tpo: self.name.clone(),
            call_id: if summary.call_id.is_empty() {
                "-".into()
            } else {
                summary.call_id.clone()
            },
            user,
            line: routed.line,
            direction: routed.direction.as_str().into(),
            calling: summary.calling.clone(),
            called: summary.called.clone(),
            started_at: rfc3339(summary.started_unix_ms),
            answered_at: summary.answered_unix_ms.map(rfc3339),
            ended_at: rfc3339(summary.ended_unix_ms.max(summary.started_unix_ms)),
            outcome: outcome(summary).into(),
            recordings: summary.recordings.clone(),
        }
    }

    /// Forks to every registered device of the users with a talk appearance of `line`
    /// (but the caller's own), and to every live peer unless the call came from one.
    fn line_forks(
        &self,
        now: Instant,
        config: &TpoConfig,
        registrar: &Registrar,
        line: &Line,
        how: Ringing<'_>,
    ) -> Vec<Fork> {
        let Ringing {
            caller_device,
            from_peer,
            auto_answer,
        } = how;
        let mut forks: Vec<Fork> = Vec::new();
        let headers = if auto_answer {
            auto_answer_headers(self.local)
        } else {
            Vec::new()
        };
        for appearance in config.talk_appearances(&line.id) {
            for device in config.devices_of(&appearance.user) {
                if caller_device == Some(device.username.as_str()) {
                    continue;
                }
                for binding in registrar.lookup(now, &device.username) {
                    if !forks.iter().any(|f| f.destination == binding.source) {
                        forks.push(Fork {
                            destination: binding.source,
                            request_uri: binding.contact.clone(),
                            headers: headers.clone(),
                            party: device.user.clone(),
                        });
                    }
                }
            }
        }
        if !from_peer {
            for peer in self.peers.live() {
                let mut headers = headers.clone();
                headers.push((PEER_HEADER.into(), self.local.to_string()));
                forks.push(Fork {
                    destination: peer,
                    request_uri: format!("sip:{}@{peer}", line.number),
                    headers,
                    party: format!("peer {peer}"),
                });
            }
        }
        forks
    }

    fn route_call(
        &mut self,
        now: Instant,
        source: SocketAddr,
        invite: &Request,
        routed: &mut Routed,
    ) -> Result<Outbound, RouteRefusal> {
        let config = tss_client::current(&self.config).ok_or_else(|| RouteRefusal {
            status: 503,
            reason: "no configuration from the TSS yet".into(),
            retry_after: Some(5),
        })?;
        let mut number =
            sip_uri_user(&invite.uri).ok_or_else(|| refuse(484, "no number in the Request-URI"))?;
        let registrar = self
            .registrar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let from_peer = self.peers.is_peer(source) && header_text(invite, PEER_HEADER).is_some();
        let inbound = !from_peer && self.sbc.is_some_and(|s| s.ip() == source.ip());
        let caller_device = if inbound || from_peer {
            None
        } else {
            Some(
                registrar
                    .device_at(now, source)
                    .ok_or_else(|| refuse(403, format!("{source} is not a registered turret")))?
                    .to_owned(),
            )
        };
        let caller_user = caller_device
            .as_deref()
            .and_then(|d| config.device(d))
            .map(|d| d.user.clone());
        routed.user = caller_user.clone();
        routed.recorded = !from_peer;
        routed.direction = if inbound {
            Direction::Inbound
        } else {
            Direction::Internal
        };
        let calling = invite
            .headers
            .iter()
            .find_map(|h| match h {
                Header::From(f) => name_addr_user(f.value()).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_else(|| "anonymous".into());
        // Seizing a private wire or an intercom rings its far end; a peer's fork of an
        // intercom seizure asks for auto-answer too.
        let mut auto_answer = from_peer
            && header_text(invite, "Call-Info").is_some_and(|v| v.contains("answer-after=0"));
        if let Some(user) = &caller_user
            && let Some(seized) = config.lines_numbered(&number).find(|l| {
                rings_far_end(&l.kind) && config.talk_appearances(&l.id).any(|a| &a.user == user)
            })
        {
            let Some(far_end) = &seized.far_end else {
                return Err(refuse(404, format!("line {} has no far end", seized.id)));
            };
            routed.line = Some(seized.id.clone());
            auto_answer = seized.kind == "intercom";
            tracing::info!(line = %seized.id, far_end = %far_end, "line seized: ringing its far end");
            number = far_end.clone();
        }
        let route = if inbound || from_peer {
            Route::Internal
        } else {
            dial_plan_route(&config, &number)
        };
        let host = self.local.ip();
        let from = format!("<sip:{calling}@{host}>");
        match route {
            Route::Refuse => Err(refuse(403, format!("{number} is refused by the dial plan"))),
            Route::Sbc => {
                routed.direction = Direction::Outbound;
                let sbc = self.sbc.ok_or_else(|| refuse(503, "no SBC configured"))?;
                Ok(Outbound {
                    destinations: vec![sbc],
                    request_uri: format!("sip:{number}@{sbc}"),
                    forks: Vec::new(),
                    taken_notice: None,
                    from,
                    to: format!("<sip:{number}@{}>", sbc.ip()),
                    headers: Vec::new(),
                    codecs: None,
                    transcode: None,
                    label: "external".into(),
                })
            }
            Route::Internal => {
                let Some(line) = config.lines_numbered(&number).next() else {
                    return Err(refuse(404, format!("no line {number}")));
                };
                if routed.line.is_none() {
                    routed.line = Some(line.id.clone());
                }
                let forks = self.line_forks(
                    now,
                    &config,
                    &registrar,
                    line,
                    Ringing {
                        caller_device: caller_device.as_deref(),
                        from_peer,
                        auto_answer,
                    },
                );
                if forks.is_empty() {
                    return Err(refuse(
                        480,
                        format!("no turret with line {number} is registered"),
                    ));
                }
                Ok(Outbound {
                    destinations: Vec::new(),
                    request_uri: String::new(),
                    taken_notice: (forks.len() > 1).then(|| number.clone()),
                    forks,
                    from,
                    to: format!("<sip:{number}@{host}>"),
                    headers: Vec::new(),
                    codecs: None,
                    transcode: None,
                    label: if inbound {
                        "inbound".into()
                    } else {
                        "internal".into()
                    },
                })
            }
        }
    }
}

impl Router for TpoRouter {
    fn route(
        &mut self,
        now: Instant,
        source: SocketAddr,
        invite: &Request,
        _offered: &[Codec],
    ) -> Result<Outbound, RouteRefusal> {
        let mut routed = Routed {
            direction: Direction::Internal,
            user: None,
            line: None,
            recorded: false,
        };
        let result = self.route_call(now, source, invite, &mut routed);
        if let Some(call_id) = header_text(invite, "Call-ID") {
            self.routed.insert(call_id, routed);
        }
        result
    }

    fn ended(&mut self, _label: &str) {}

    /// Every answered call is recorded to the recorders of its user's site: the
    /// caller's for internal and outbound calls, the answering user's for inbound ones
    /// (else `[recording] default_recorders`). A peer's fork is recorded by the TPO
    /// that forked it.
    fn recording(&mut self, answered: &CallSummary) -> Option<RecordingPlan> {
        let routed = self.routed.get(&answered.call_id)?;
        if !routed.recorded {
            return None;
        }
        let user = match routed.direction {
            Direction::Inbound => answered.answered_by.clone(),
            _ => routed.user.clone(),
        };
        let config = tss_client::current(&self.config)?;
        let mut recorders = user
            .as_deref()
            .map(|u| config.recorders_of(u))
            .unwrap_or_default();
        if recorders.is_empty() {
            recorders = self.default_recorders.clone();
        }
        if recorders.is_empty() {
            // Counted as copies="0" in floorwire_tpo_recorded_calls_total (alert on
            // it); a line per call would flood the log of a floor without recorders.
            tracing::debug!(call_id = %answered.call_id, user = ?user, "no recorder for this call");
            return None;
        }
        let host = self.local.ip();
        let mut extension = vec![("direction".to_owned(), routed.direction.as_str().to_owned())];
        if let Some(user) = &user {
            extension.push(("user".into(), user.clone()));
        }
        if let Some(line) = &routed.line {
            extension.push(("line".into(), line.clone()));
        }
        extension.push(("tpo".into(), self.name.clone()));
        Some(RecordingPlan {
            recorders,
            metadata: RecordingMetadata {
                call_id: answered.call_id.clone(),
                caller: Participant {
                    aor: format!("sip:{}@{host}", answered.calling),
                    name: routed
                        .user
                        .clone()
                        .filter(|_| routed.direction != Direction::Inbound),
                },
                callee: Participant {
                    aor: format!("sip:{}@{host}", answered.called),
                    name: answered.answered_by.clone(),
                },
                start_time: rfc3339(
                    answered
                        .answered_unix_ms
                        .unwrap_or(answered.started_unix_ms),
                ),
                extension,
            },
        })
    }

    fn call_ended(&mut self, summary: &CallSummary) {
        let routed = self.routed.remove(&summary.call_id);
        if routed.as_ref().is_some_and(|r| !r.recorded) {
            return;
        }
        if summary.answered_unix_ms.is_some()
            && let Some(sink) = &self.records
        {
            sink.metrics.recorded_call(summary.recordings.len());
        }
        let record = self.record(summary, routed);
        tracing::info!(
            record = %record.record_id,
            outcome = %record.outcome,
            direction = %record.direction,
            "call record"
        );
        if let Some(sink) = &self.records {
            sink.send(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_routes() {
        let config: TpoConfig = serde_json::from_value(serde_json::json!({
            "revision": 1, "devices": [], "lines": [], "appearances": [],
            "dial_plan": [
                {"prefix": "7", "route": "internal"},
                {"prefix": "0", "route": "sbc"},
                {"prefix": "08", "route": "refuse"},
                {"prefix": "+", "route": "sbc"}
            ]
        }))
        .unwrap();
        assert_eq!(dial_plan_route(&config, "7002"), Route::Internal);
        assert_eq!(dial_plan_route(&config, "0142685300"), Route::Sbc);
        assert_eq!(dial_plan_route(&config, "0899123456"), Route::Refuse);
        assert_eq!(dial_plan_route(&config, "+441234"), Route::Sbc);
        assert_eq!(dial_plan_route(&config, "5555"), Route::Internal);
    }

    #[test]
    fn records_carry_rfc3339_times_and_the_outcome() {
        assert_eq!(rfc3339(1_764_547_200_123), "2025-12-01T00:00:00.123Z");
        let mut summary = CallSummary {
            call: 1,
            call_id: "c".into(),
            label: "internal".into(),
            calling: "7001".into(),
            called: "7100".into(),
            started_unix_ms: 1,
            answered_unix_ms: None,
            ended_unix_ms: 2,
            status: 486,
            cancelled: false,
            answered_by: None,
            recordings: Vec::new(),
        };
        assert_eq!(outcome(&summary), "busy");
        summary.status = 487;
        summary.cancelled = true;
        assert_eq!(outcome(&summary), "cancelled");
        summary.answered_unix_ms = Some(2);
        assert_eq!(outcome(&summary), "answered");
        summary.answered_unix_ms = None;
        summary.cancelled = false;
        summary.status = 404;
        assert_eq!(outcome(&summary), "refused");
    }
}
