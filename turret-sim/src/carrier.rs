//! The carrier stand-in: the far side of the SBC's trunk. It answers every call (180,
//! 200 with an SDP answer, 200 to BYE), keeps the called and calling numbers each call
//! arrived with, and echoes whatever RTP reaches its media port back to its sender
//! (so a turret calling out hears its own tone come back through the SBC). Its admin
//! port serves `/metrics`, `/healthz` and `GET /calls` (the calls received, oldest
//! first). Inbound calls to DIDs are placed from the carrier's address by the scenario
//! runner (docs/scenarios.md).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use floorwire::service::admin::Health;
use floorwire::sip::answerer::Answerer;
use floorwire::sip::msg::{Header, Method};
use floorwire::sip::syntax::name_addr_user;
use floorwire::sip::transaction::{Event, TransactionLayer};
use floorwire::sip::udp::{TransactionUser, UdpConfig, run_udp};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Calls kept in the log (the oldest go first).
const KEPT_CALLS: usize = 10_000;

/// Where the carrier listens.
#[derive(Debug, Clone)]
pub struct CarrierOptions {
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    /// Media address announced in SDP answers; RTP arriving there is echoed.
    pub media: SocketAddr,
}

type CallLog = Arc<Mutex<Vec<Value>>>;

/// The answerer, with every new call's numbers written down.
#[derive(Debug)]
struct Carrier {
    answerer: Answerer,
    log: CallLog,
}

fn user_of(header: Option<String>) -> String {
    header
        .as_deref()
        .and_then(name_addr_user)
        .unwrap_or_default()
        .to_owned()
}

impl TransactionUser for Carrier {
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        if let Event::Request {
            request, source, ..
        } = &event
        {
            let find =
                |wanted: fn(&Header) -> Option<String>| request.headers.iter().find_map(wanted);
            let to = find(|h| match h {
                Header::To(t) => Some(t.value().to_owned()),
                _ => None,
            });
            let call_id = find(|h| match h {
                Header::CallId(c) => Some(c.value().to_owned()),
                _ => None,
            })
            .unwrap_or_default();
            let initial = to.as_deref().is_some_and(|t| !t.contains("tag="));
            if let Ok(mut log) = self.log.lock() {
                match request.method {
                    Method::Invite if initial => {
                        let from = find(|h| match h {
                            Header::From(f) => Some(f.value().to_owned()),
                            _ => None,
                        });
                        let called = request
                            .uri
                            .auth
                            .as_ref()
                            .map(|a| a.user.clone())
                            .unwrap_or_else(|| user_of(to.clone()));
                        log.push(json!({
                            "call_id": call_id,
                            "called": called,
                            "to": user_of(to),
                            "calling": user_of(from),
                            "from_address": source.to_string(),
                            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                            "ended_at": Value::Null,
                        }));
                        let excess = log.len().saturating_sub(KEPT_CALLS);
                        log.drain(..excess);
                    }
                    Method::Bye => {
                        if let Some(call) = log
                            .iter_mut()
                            .rev()
                            .find(|c| c["call_id"] == call_id.as_str())
                        {
                            call["ended_at"] = json!(
                                humantime::format_rfc3339_millis(SystemTime::now()).to_string()
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        self.answerer.on_event(now, event, layer);
    }
}

/// Echoes every datagram back to its sender until `shutdown`.
async fn echo(socket: tokio::net::UdpSocket, shutdown: CancellationToken) {
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
            }
        }
    }
}

async fn calls(State(log): State<CallLog>) -> Json<Vec<Value>> {
    Json(log.lock().map(|l| l.clone()).unwrap_or_default())
}

/// Serves the carrier until `shutdown`; `ready` gets `(admin, sip)` once both are bound.
pub async fn serve(
    options: CarrierOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<(), Error> {
    let socket = tokio::net::UdpSocket::bind(options.sip)
        .await
        .map_err(|e| Error::Lab(format!("carrier SIP {}: {e}", options.sip)))?;
    let sip = socket.local_addr()?;
    let media = tokio::net::UdpSocket::bind(options.media)
        .await
        .map_err(|e| Error::Lab(format!("carrier media {}: {e}", options.media)))?;
    let health = Health::default();
    let registry = prometheus::Registry::new();
    let metrics = floorwire::sip::metrics::SipMetrics::register(&registry)
        .map_err(|e| Error::Lab(format!("carrier metrics: {e}")))?;
    let log: CallLog = Arc::default();
    let app = floorwire::service::admin::router(registry, health.clone()).merge(
        axum::Router::new()
            .route("/calls", get(calls))
            .with_state(log.clone()),
    );
    let listener = tokio::net::TcpListener::bind(options.admin)
        .await
        .map_err(|e| Error::Lab(format!("carrier admin {}: {e}", options.admin)))?;
    let admin = listener.local_addr()?;
    let stop = shutdown.clone();
    let admin_serving = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    };
    tokio::spawn(echo(media, shutdown.clone()));
    health.set_ready(true);
    ready(admin, sip);
    let carrier = Carrier {
        answerer: Answerer::new(format!("sip:carrier@{sip}"), options.media),
        log,
    };
    let (sip_result, admin_result) = tokio::join!(
        run_udp(
            socket,
            UdpConfig {
                metrics: Some(metrics),
                ..UdpConfig::default()
            },
            carrier,
            shutdown.clone()
        ),
        admin_serving
    );
    sip_result?;
    admin_result?;
    Ok(())
}
