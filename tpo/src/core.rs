//! The TPO's SIP transaction user: the registrar (digest against the TSS-minted HA1s)
//! and OPTIONS keepalives here; calls go to the B2BUA core (`floorwire::sip::b2bua`)
//! with [`crate::router::TpoRouter`] deciding where they go and the RTP anchored on
//! this TPO's relay.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use floorwire::rtp::RelayAnchor;
use floorwire::sip::Tag;
use floorwire::sip::auth::{AuthVerdict, DigestServer};
use floorwire::sip::b2bua::B2bua;
use floorwire::sip::msg::{Header, Method, Request};
use floorwire::sip::reply::{response_to, with_header};
use floorwire::sip::transaction::{Event, TransactionId, TransactionLayer};
use floorwire::sip::uas::header_text;
use floorwire::sip::udp::TransactionUser;
use std::sync::{Arc, Mutex};

use crate::router::TpoRouter;
use floorwire::sip::syntax::uri_user;

use crate::metrics::TpoMetrics;
use crate::registrar::{RegisterOutcome, RegisterRequest, Registrar, parse_contacts};
use crate::tss_client::{self, Shared};

/// The methods the TPO answers, for `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, OPTIONS, REGISTER";

/// Registrar, keepalive and calls.
pub struct TpoCore {
    pub registrar: Arc<Mutex<Registrar>>,
    pub calls: B2bua<TpoRouter, RelayAnchor>,
    pub digest: DigestServer,
    pub config: Shared,
    pub metrics: TpoMetrics,
    /// Our address in Warning headers.
    pub local: SocketAddr,
    last_sweep: Option<Instant>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl std::fmt::Debug for TpoCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpoCore")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TpoCore {
    pub fn new(
        registrar: Arc<Mutex<Registrar>>,
        calls: B2bua<TpoRouter, RelayAnchor>,
        digest: DigestServer,
        config: Shared,
        metrics: TpoMetrics,
        local: SocketAddr,
    ) -> Self {
        TpoCore {
            registrar,
            calls,
            digest,
            config,
            metrics,
            local,
            last_sweep: None,
        }
    }

    /// Brings the call and RTP metrics up to date.
    fn calls_changed(&self) {
        self.metrics.calls.update(&self.calls.stats());
        self.metrics.rtp(self.calls.media().totals());
        self.metrics
            .rtp_port_pairs_free
            .set(self.calls.media().ports_available() as i64);
        self.metrics.rtp_calls.set(self.calls.media().len() as i64);
    }

    fn bindings(&self) -> std::sync::MutexGuard<'_, Registrar> {
        self.registrar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn respond(
        &self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: TransactionId,
        response: floorwire::sip::msg::Response,
    ) {
        if let Err(e) = layer.respond(now, id, response) {
            tracing::warn!(error = %e, "response not sent");
        }
    }

    fn warning(&self, text: &str) -> Header {
        Header::Other(
            "Warning".into(),
            format!("399 {} \"{text}\"", self.local.ip()),
        )
    }

    /// Recomputes the registration gauges.
    fn publish(&self, now: Instant) {
        let devices: Vec<String> = self.bindings().registered(now).map(str::to_owned).collect();
        self.metrics.registered_devices.set(devices.len() as i64);
        let lines = match tss_client::current(&self.config) {
            Some(config) => {
                let users: Vec<&str> = devices
                    .iter()
                    .filter_map(|d| config.device(d).map(|d| d.user.as_str()))
                    .collect();
                config.lines_of(&users).len()
            }
            None => 0,
        };
        self.metrics.registered_lines.set(lines as i64);
    }

    fn register(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: TransactionId,
        source: SocketAddr,
        request: &Request,
        ids: &floorwire::sip::MessageIds,
    ) {
        let tag = Tag::generate();
        let Some(config) = tss_client::current(&self.config) else {
            self.metrics.registration("refused");
            let response = with_header(
                response_to(request, 503, Some(&tag)),
                Header::RetryAfter("5".into()),
            );
            self.respond(
                now,
                layer,
                id,
                with_header(response, self.warning("no configuration from the TSS yet")),
            );
            return;
        };
        let authorization = header_text(request, "Authorization");
        let verdict = self.digest.verify(
            authorization.as_deref(),
            "REGISTER",
            &request.uri.to_string(),
            unix_now(),
            |user| config.device(user).map(|d| d.ha1_md5.clone()),
        );
        let username = match verdict {
            AuthVerdict::Authenticated { username } => username,
            AuthVerdict::Challenge(challenge) => {
                self.metrics.registration("challenged");
                let response = with_header(
                    response_to(request, 401, Some(&tag)),
                    Header::WwwAuthenticate(challenge.to_header_value().into()),
                );
                self.respond(now, layer, id, response);
                return;
            }
            AuthVerdict::Forbidden => {
                self.metrics.registration("forbidden");
                tracing::info!(%source, "REGISTER refused: wrong credentials");
                self.respond(now, layer, id, response_to(request, 403, Some(&tag)));
                return;
            }
        };
        // A device registers its own address-of-record only.
        let to = header_text(request, "To").unwrap_or_default();
        let aor_user = floorwire::sip::syntax::parse_name_addr(&to)
            .ok()
            .and_then(|a| uri_user(a.uri).map(str::to_owned));
        if aor_user.as_deref() != Some(username.as_str()) {
            self.metrics.registration("forbidden");
            let response = with_header(
                response_to(request, 403, Some(&tag)),
                self.warning("To is not the authenticated device"),
            );
            self.respond(now, layer, id, response);
            return;
        }
        let contact_values: Vec<String> = request
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Contact"))
            .map(|h| h.value().to_owned())
            .collect();
        let refs: Vec<&str> = contact_values.iter().map(String::as_str).collect();
        let parsed = parse_contacts(&refs);
        let expires = header_text(request, "Expires").and_then(|e| e.trim().parse::<u32>().ok());
        let cseq = ids.cseq.as_ref().map_or(0, |(n, _)| *n);
        let outcome = match parsed {
            Err(reason) => RegisterOutcome::Invalid(reason),
            Ok((wildcard, contacts)) if contacts.is_empty() && !wildcard => {
                // A query: the bindings in force.
                let now_list = self
                    .bindings()
                    .lookup(now, &username)
                    .iter()
                    .map(|b| {
                        (
                            b.contact.clone(),
                            u32::try_from(b.expires_at.saturating_duration_since(now).as_secs())
                                .unwrap_or(0),
                        )
                    })
                    .collect();
                RegisterOutcome::Bound(now_list)
            }
            Ok((wildcard, contacts)) => self.bindings().register(
                now,
                &username,
                &RegisterRequest {
                    wildcard,
                    contacts,
                    expires,
                    call_id: ids
                        .call_id
                        .as_ref()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default(),
                    cseq,
                },
                source,
            ),
        };
        let response = match outcome {
            RegisterOutcome::Bound(bindings) => {
                self.metrics.registration(if bindings.is_empty() {
                    "removed"
                } else {
                    "bound"
                });
                tracing::info!(device = %username, %source, contacts = bindings.len(), "registered");
                let mut response = response_to(request, 200, Some(&tag));
                for (contact, secs) in bindings {
                    response = with_header(
                        response,
                        Header::Contact(format!("<{contact}>;expires={secs}").into()),
                    );
                }
                response
            }
            RegisterOutcome::IntervalTooBrief(min) => {
                self.metrics.registration("refused");
                with_header(
                    response_to(request, 423, Some(&tag)),
                    Header::Other("Min-Expires".into(), min.to_string()),
                )
            }
            RegisterOutcome::Invalid(reason) => {
                self.metrics.registration("refused");
                with_header(
                    response_to(request, 400, Some(&tag)),
                    self.warning(&reason.replace(['"', '\\'], " ")),
                )
            }
        };
        self.respond(now, layer, id, response);
        self.publish(now);
    }
}

impl TransactionUser for TpoCore {
    fn next_timer(&self) -> Option<Instant> {
        self.calls.next_timer()
    }

    fn on_timer(&mut self, now: Instant, layer: &mut TransactionLayer) {
        self.calls.on_timer(now, layer);
        self.calls_changed();
    }

    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        // Expired bindings leave the gauges within a second.
        if self
            .last_sweep
            .is_none_or(|t| now.duration_since(t).as_secs() >= 1)
        {
            self.last_sweep = Some(now);
            let expired = self.bindings().expire(now);
            if expired > 0 {
                self.publish(now);
            }
        }
        let (id, source, request, ids) = match event {
            Event::Request {
                id,
                source,
                request,
                ids,
            } if matches!(request.method, Method::Register | Method::Options) => {
                (id, source, request, ids)
            }
            // INVITE, in-dialog requests, responses and timers: the calls.
            other => {
                self.calls.on_event(now, other, layer);
                self.calls_changed();
                return;
            }
        };
        if request.method == Method::Register {
            self.register(now, layer, id, source, &request, &ids);
        } else {
            let tag = Tag::generate();
            let response = with_header(
                response_to(&request, 200, Some(&tag)),
                Header::Allow(ALLOW.to_owned().into()),
            );
            self.respond(now, layer, id, response);
        }
    }
}
