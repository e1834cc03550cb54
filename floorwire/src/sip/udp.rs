//! The thin tokio driver: a UDP socket, the [`TransactionLayer`], and a
//! [`TransactionUser`] that decides what to do with requests and responses.
//!
//! Ingress is bounded twice: the socket reader hands datagrams to the core through a
//! bounded queue and, when it is full, answers requests 503 + Retry-After itself; the
//! layer refuses new server transactions beyond its limit the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ids::{MessageIds, Tag};
use super::ingress::{Inbound, parse_datagram};
use super::metrics::SipMetrics;
use super::reply::{response_to, with_header};
use super::transaction::{Event, LayerConfig, LayerStats, TransactionLayer};
use rsipstack::sip::{Header, Method, headers::untyped::RetryAfter};

/// Decides what to do with what the transaction layer reports.
pub trait TransactionUser: Send + 'static {
    /// Handles one event; may call any layer method (respond, send_request…).
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer);
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    pub layer: LayerConfig,
    /// Datagrams queued between the socket reader and the core.
    pub ingress_queue: usize,
    /// Counters to keep up to date, if the service exports them.
    pub metrics: Option<SipMetrics>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            layer: LayerConfig::default(),
            ingress_queue: 4096,
            metrics: None,
        }
    }
}

/// Runs the endpoint until `shutdown` is cancelled; returns the layer's counters.
pub async fn run_udp<U: TransactionUser>(
    socket: UdpSocket,
    config: UdpConfig,
    mut user: U,
    shutdown: CancellationToken,
) -> std::io::Result<LayerStats> {
    let (tx, mut rx) = mpsc::channel::<(SocketAddr, Vec<u8>)>(config.ingress_queue.max(1));
    let retry_after = config.layer.retry_after_secs;
    let mut metrics = config.metrics;
    // The reader runs on its own thread, on a duplicate of the socket, so that it keeps
    // reading — and shedding with 503 — however busy the core or the runtime is.
    let std_socket = socket.into_std()?;
    let reader_socket = std_socket.try_clone()?;
    let socket = Arc::new(UdpSocket::from_std(std_socket)?);
    let reader_stop = shutdown.child_token();
    let _stop_reader_on_return = reader_stop.clone().drop_guard();
    let reader_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("sip-udp-reader".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    match UdpSocket::from_std(reader_socket) {
                        Ok(socket) => {
                            read_loop(socket, tx, retry_after, reader_metrics, reader_stop).await
                        }
                        Err(e) => tracing::error!(error = %e, "SIP reader socket"),
                    }
                }),
                Err(e) => tracing::error!(error = %e, "SIP reader runtime"),
            }
        })?;
    let mut layer = TransactionLayer::new(config.layer);
    loop {
        let deadline = layer.poll_timeout();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            received = rx.recv() => {
                let Some((source, bytes)) = received else { break };
                let now = tokio::time::Instant::now().into_std();
                layer.handle_datagram(now, source, &bytes);
                // Take what else is already queued before flushing, up to a batch.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok((source, bytes)) => layer.handle_datagram(now, source, &bytes),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {
                layer.handle_timeout(tokio::time::Instant::now().into_std());
            }
        }
        let now = tokio::time::Instant::now().into_std();
        while let Some(event) = layer.poll_event() {
            // One span per call: every log line the TU writes carries the Call-ID.
            let call_id = match &event {
                Event::Request { request, .. } | Event::Ack { request, .. } => {
                    MessageIds::of(request).call_id
                }
                Event::Response { response, .. } | Event::Stray2xx { response } => {
                    MessageIds::of(response).call_id
                }
                _ => None,
            };
            let span = tracing::debug_span!(
                "sip",
                call_id = call_id.as_ref().map(|c| c.as_str()).unwrap_or("-")
            );
            span.in_scope(|| user.on_event(now, event, &mut layer));
        }
        while let Some(t) = layer.poll_transmit() {
            if let Err(e) = socket.send_to(&t.bytes, t.destination).await {
                tracing::warn!(destination = %t.destination, error = %e, "SIP send failed");
            }
        }
        if let Some(m) = metrics.as_mut() {
            m.update(&layer.stats(), layer.len());
        }
    }
    Ok(layer.stats())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn read_loop(
    socket: UdpSocket,
    queue: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    retry_after: u32,
    metrics: Option<SipMetrics>,
    shutdown: CancellationToken,
) {
    // One byte more than the largest datagram we accept, to notice truncation.
    let mut buffer = vec![0u8; super::framing::MAX_DATAGRAM + 1];
    loop {
        let (len, source) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buffer) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable surfaces here on some systems; keep going.
                    tracing::debug!(error = %e, "SIP receive error");
                    continue;
                }
            },
        };
        if len > super::framing::MAX_DATAGRAM {
            tracing::warn!(%source, "dropped oversized SIP datagram");
            continue;
        }
        match queue.try_send((source, buffer[..len].to_vec())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full((source, bytes))) => {
                tracing::warn!(%source, "SIP ingress queue full: answering 503");
                if let Some(m) = &metrics {
                    m.shed();
                }
                shed(&socket, source, &bytes, retry_after).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Overload: answer a request 503 + Retry-After without creating any state.
async fn shed(socket: &UdpSocket, source: SocketAddr, bytes: &[u8], retry_after: u32) {
    if let Ok(Inbound::Request(request)) = parse_datagram(bytes)
        && request.method != Method::Ack
    {
        let response = with_header(
            response_to(&request, 503, Some(&Tag::generate())),
            Header::RetryAfter(RetryAfter::new(retry_after.to_string())),
        );
        let _ = socket.send_to(&response.to_bytes(), source).await;
    }
}
