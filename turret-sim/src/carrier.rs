//! The carrier stand-in: the far side of the SBC's trunk. It answers every call (180,
//! 200 with an SDP answer, 200 to BYE), keeps the called and calling numbers each call
//! arrived with, and echoes whatever RTP reaches its media port back to its sender
//! (so a turret calling out hears its own tone come back through the SBC). Its admin
//! port serves `/metrics`, `/healthz`, `GET /calls` (the calls received and placed,
//! oldest first) and `POST /calls` (`{"from": NUMBER, "to": DID, "hold_secs": N}`):
//! the carrier places an inbound call to a DID through the SBC, holds it `hold_secs`
//! once answered (default 30, at most 3600) and hangs up (100 at once at most); its progress shows in
//! `GET /calls` with `"direction": "inbound"`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

/// Inbound calls the carrier places at once, at most (`POST /calls` past it: 503).
const MAX_PLACED: usize = 100;

/// Where the carrier listens.
#[derive(Debug, Clone)]
pub struct CarrierOptions {
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    /// The SBC the carrier places inbound calls through.
    pub sbc: SocketAddr,
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

/// What the admin routes share.
#[derive(Debug, Clone)]
struct Api {
    log: CallLog,
    /// Inbound calls being placed now.
    placing: Arc<std::sync::atomic::AtomicUsize>,
    sip_ip: std::net::IpAddr,
    sbc: SocketAddr,
}

async fn calls(State(api): State<Api>) -> Json<Vec<Value>> {
    Json(api.log.lock().map(|l| l.clone()).unwrap_or_default())
}

/// `POST /calls`: what to place.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Place {
    from: String,
    to: String,
    #[serde(default)]
    hold_secs: Option<u64>,
}

/// A number as a carrier sends it: an optional `+`, then 1–32 digits.
fn is_number(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or(n);
    (1..=32).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

async fn place(
    State(api): State<Api>,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode;
    let bad = |m: String| (StatusCode::BAD_REQUEST, Json(json!({"error": m})));
    let place: Place = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(format!("body: {e}")),
    };
    if !is_number(&place.from) {
        return bad(format!(
            "from: {:?} is not a number (+ and 1-32 digits)",
            place.from
        ));
    }
    if !is_number(&place.to) {
        return bad(format!(
            "to: {:?} is not a number (+ and 1-32 digits)",
            place.to
        ));
    }
    let hold = place.hold_secs.unwrap_or(30);
    if hold > 3600 {
        return bad(format!("hold_secs: {hold} is more than 3600"));
    }
    if api.placing.load(std::sync::atomic::Ordering::Relaxed) >= MAX_PLACED {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("{MAX_PLACED} inbound calls at once already")})),
        );
    }
    let entry = format!("inbound-{:016x}", rand::random::<u64>());
    {
        let Ok(mut log) = api.log.lock() else {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "log"})),
            );
        };
        log.push(json!({
            "id": entry,
            "direction": "inbound", "called": place.to, "calling": place.from,
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "state": "dialling", "status": Value::Null, "ended_at": Value::Null,
        }));
        let excess = log.len().saturating_sub(KEPT_CALLS);
        log.drain(..excess);
    }
    api.placing
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(inbound(
        api,
        place,
        Duration::from_secs(hold),
        entry.clone(),
    ));
    (StatusCode::ACCEPTED, Json(json!({"call": entry})))
}

/// Places one inbound call and follows it into the log's `entry`.
async fn inbound(api: Api, place: Place, hold: Duration, entry: String) {
    let set = |key: &str, value: Value| {
        if let Ok(mut log) = api.log.lock()
            && let Some(e) = log.iter_mut().rev().find(|e| e["id"] == entry.as_str())
        {
            e[key] = value;
        }
    };
    let config = crate::turret::UaConfig {
        username: place.from.clone(),
        password: String::new(),
        local: SocketAddr::new(api.sip_ip, 0),
        registrars: vec![api.sbc],
        expires: 60,
        keepalive: Duration::from_secs(1),
        dead_after: Duration::from_secs(2),
        tone_hz: 300.0,
        auto_answer: false,
    };
    let outcome = async {
        let agent = crate::turret::Turret::start("carrier", config).await?;
        let id = agent.call(&place.to).await?;
        let view = agent
            .wait_for("answered or ended", Duration::from_secs(60), |v| {
                v.calls.iter().any(|c| {
                    c.id == id
                        && matches!(
                            c.state,
                            crate::turret::CallState::Up | crate::turret::CallState::Ended
                        )
                })
            })
            .await?;
        let call = view.calls.into_iter().find(|c| c.id == id);
        if call
            .as_ref()
            .is_some_and(|c| c.state == crate::turret::CallState::Up)
        {
            set("state", json!("answered"));
            tokio::time::sleep(hold).await;
            agent.hang_up(id)?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            set("state", json!("ended"));
        } else {
            set("state", json!("failed"));
            set("status", json!(call.and_then(|c| c.status)));
        }
        agent.stop();
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = outcome {
        set("state", json!("failed"));
        set("error", json!(e.to_string()));
    }
    set(
        "ended_at",
        json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
    );
    api.placing
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
    let api = Api {
        log: log.clone(),
        placing: Arc::default(),
        sip_ip: sip.ip(),
        sbc: options.sbc,
    };
    let app = floorwire::service::admin::router(registry, health.clone()).merge(
        axum::Router::new()
            .route("/calls", get(calls).post(place))
            .with_state(api),
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
