//! The recorder's replay port (HTTP): search recordings, read one's metadata, fetch
//! its audio. Turrets replay from here; scenarios check recordings through it.
//!
//! - `GET /recordings?user=&number=&call_id=&line=&from=&to=` → metadata of the
//!   matching recordings, oldest first. `number` matches either party's number;
//!   `from`/`to` (RFC 3339) bound when the recording started.
//! - `GET /recordings/ID` → that recording's metadata.
//! - `GET /recordings/ID/audio.wav` → its audio (16-bit 8 kHz stereo WAV: left the
//!   caller, right the callee), once the session has ended.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::Error;

/// Query parameters `GET /recordings` takes.
const FILTERS: [&str; 6] = ["user", "number", "call_id", "line", "from", "to"];

/// Binds the replay port; the returned future serves it until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), Error>>,
    ),
    Error,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Lab(format!("recorder replay {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/recordings", get(search))
        .route("/recordings/{id}", get(metadata))
        .route("/recordings/{id}/audio.wav", get(audio))
        .with_state(store);
    Ok((bound, async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(Error::Io)
    }))
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `value` as a time, or the message naming `field`.
fn time(field: &str, value: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(value)
        .map_err(|e| format!("{field}: {value:?} is not an RFC 3339 time ({e})"))
}

/// Whether recording `r` matches every filter.
fn matches(
    r: &Value,
    filters: &HashMap<String, String>,
    from: Option<SystemTime>,
    to: Option<SystemTime>,
) -> bool {
    let text = |key: &str| r[key].as_str().unwrap_or_default().to_owned();
    let numbers = [&r["caller"]["number"], &r["callee"]["number"]];
    filters.get("user").is_none_or(|u| text("user") == *u)
        && filters.get("call_id").is_none_or(|c| text("call_id") == *c)
        && filters.get("line").is_none_or(|l| text("line") == *l)
        && filters
            .get("number")
            .is_none_or(|n| numbers.iter().any(|v| v.as_str() == Some(n.as_str())))
        && {
            let started = humantime::parse_rfc3339_weak(&text("started_at")).ok();
            from.is_none_or(|f| started.is_some_and(|s| s >= f))
                && to.is_none_or(|t| started.is_some_and(|s| s <= t))
        }
}

async fn search(
    State(store): State<Arc<Store>>,
    Query(filters): Query<HashMap<String, String>>,
) -> Response {
    if let Some(unknown) = filters.keys().find(|k| !FILTERS.contains(&k.as_str())) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("unknown filter {unknown:?}; known: {}", FILTERS.join(", ")),
        );
    }
    let bounds = filters
        .get("from")
        .map(|v| time("from", v))
        .transpose()
        .and_then(|from| Ok((from, filters.get("to").map(|v| time("to", v)).transpose()?)));
    let (from, to) = match bounds {
        Ok(bounds) => bounds,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let found: Vec<Value> = store
        .all()
        .into_iter()
        .filter(|r| matches(r, &filters, from, to))
        .collect();
    Json(found).into_response()
}

async fn metadata(State(store): State<Arc<Store>>, Path(id): Path<String>) -> Response {
    match store.get(&id) {
        Some(m) => Json(m).into_response(),
        None => refuse(StatusCode::NOT_FOUND, format!("no recording {id}")),
    }
}

async fn audio(State(store): State<Arc<Store>>, Path(id): Path<String>) -> Response {
    let Some(m) = store.get(&id) else {
        return refuse(StatusCode::NOT_FOUND, format!("no recording {id}"));
    };
    if m["audio"].is_null() {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "recording {id} is {}: no audio yet",
                m["state"].as_str().unwrap_or("?")
            ),
        );
    }
    // The id comes from the index, not from the request alone: no path traversal.
    match tokio::fs::read(store.folder(&id).join("audio.wav")).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("recording {id}: {e}"),
        ),
    }
}
