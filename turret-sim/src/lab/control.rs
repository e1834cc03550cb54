//! The lab's control port (HTTP on loopback, `control` in lab.json): list the
//! services, stop one (SIGTERM, or SIGKILL with `?kill=true`) and start it again.
//! Scenario faults go through it.
//!
//! - `GET /services` → `[{"name": "tpo-1a", "kind": "tpo", "up": true}, …]`
//! - `POST /services/NAME/stop[?kill=true]` → 200 once it has exited
//! - `POST /services/NAME/start` → 200 once it is healthy again

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Supervisor;
use crate::Error;

type Shared = Arc<tokio::sync::Mutex<Supervisor>>;

/// Binds the control port and serves it until `shutdown`: the bound address and the
/// serving task.
pub async fn serve(
    addr: SocketAddr,
    supervisor: Shared,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Lab(format!("control port {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/services", get(list))
        .route("/services/{name}/stop", post(stop))
        .route("/services/{name}/start", post(start))
        .with_state(supervisor);
    Ok((
        bound,
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        }),
    ))
}

async fn list(State(s): State<Shared>) -> Response {
    let status = s.lock().await.status();
    let body: Vec<_> = status
        .into_iter()
        .map(|(name, kind, up)| json!({"name": name, "kind": kind, "up": up}))
        .collect();
    Json(body).into_response()
}

fn failure(e: Error) -> Response {
    let status = if e.to_string().contains("no lab service called") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

async fn stop(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let kill = query.get("kill").is_some_and(|v| v == "true");
    match s.lock().await.stop(&name, kill).await {
        Ok(()) => Json(json!({"stopped": name, "kill": kill})).into_response(),
        Err(e) => failure(e),
    }
}

async fn start(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.lock().await.start(&name).await {
        Ok(()) => Json(json!({"started": name})).into_response(),
        Err(e) => failure(e),
    }
}
