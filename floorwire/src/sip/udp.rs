//! The thin tokio driver: a UDP socket, the [`TransactionLayer`], and a
//! [`TransactionUser`] that decides what to do with requests and responses.
//!
//! Ingress is bounded twice: the socket reader hands datagrams to the core through a
//! bounded queue and, when it is full, answers new requests 503 + Retry-After itself
//! (what moves on calls already up has four times the room); the layer refuses new
//! server transactions beyond its limit the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::framing::{MAX_DATAGRAM, ToWire};
use super::ids::MessageIds;
use super::ids::Tag;
use super::ingress::{Inbound, parse_datagram_with_ids};
use super::metrics::SipMetrics;
use super::reply::{response_to, with_header};
use super::transaction::{Event, LayerConfig, LayerStats, TransactionLayer, Transmit};
use rsipstack::sip::{Header, Method, headers::untyped::RetryAfter};

/// A datagram the reader parsed, for the core: its source, the message and the
/// identifiers read while checking it (so the core does not read them again).
type Parsed = (SocketAddr, Inbound, MessageIds);

/// What the reader hands the core: the messages of one receive, and when they came.
type Received = (Instant, Vec<Parsed>);

/// Decides what to do with what the transaction layer reports.
pub trait TransactionUser: Send + 'static {
    /// Handles one event; may call any layer method (respond, send_request…).
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer);
    /// When the user's own timer is due next (media checks, say); `None`: no timer.
    fn next_timer(&self) -> Option<Instant> {
        None
    }
    /// The user's timer is due.
    fn on_timer(&mut self, _now: Instant, _layer: &mut TransactionLayer) {}
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    pub layer: LayerConfig,
    /// Parsed messages waiting between the socket reader and the core; past this the
    /// reader answers new requests (outside a dialog, not ACK or CANCEL) 503 +
    /// Retry-After itself. Responses, ACK, CANCEL and in-dialog requests, which move
    /// on what is already up, are admitted up to four times this; past that requests
    /// get 503 too, and responses and ACKs are dropped.
    pub ingress_queue: usize,
    /// Counters to keep up to date, if the service exports them.
    pub metrics: Option<SipMetrics>,
    /// Kernel receive buffer asked for the SIP socket (SO_RCVBUF), in bytes: room for
    /// bursts while the reader is not scheduled. The kernel caps it at
    /// `net.core.rmem_max` (a warning says so); 0 keeps the system default.
    pub receive_buffer: usize,
}

/// The default SIP receive buffer: 4 MiB, what Kamailio's `maxbuffer` and SIPp's
/// `-buff_size` are given in the benchmarks. The system default (~208 KiB) overflowed
/// at 2,000 calls/s here, and a dropped 180 or 200 turned into a failed call.
pub const DEFAULT_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            layer: LayerConfig::default(),
            ingress_queue: 4096,
            metrics: None,
            receive_buffer: DEFAULT_RECEIVE_BUFFER,
        }
    }
}

/// Counters the reader thread keeps (it answers what never reaches the layer).
#[derive(Debug, Default)]
struct ReaderCounters {
    malformed: AtomicU64,
    shed: AtomicU64,
}

/// Runs the endpoint until `shutdown` is cancelled; returns the layer's counters (with
/// what the reader answered by itself added in).
pub async fn run_udp<U: TransactionUser>(
    socket: UdpSocket,
    config: UdpConfig,
    mut user: U,
    shutdown: CancellationToken,
) -> std::io::Result<LayerStats> {
    // Bounded by `queued`: the reader admits a new request only while fewer than
    // `ingress_queue` are waiting for the core (anything else up to four times that).
    let (tx, mut rx) = mpsc::unbounded_channel::<Received>();
    let queued = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(ReaderCounters::default());
    let mut metrics = config.metrics;
    // The reader runs on its own thread, on a duplicate of the socket: it parses and
    // validates (answering bad messages itself), and keeps reading — and shedding with
    // 503 — however busy the core or the runtime is.
    let std_socket = socket.into_std()?;
    if config.receive_buffer > 0 {
        set_receive_buffer(&std_socket, config.receive_buffer);
    }
    let reader_socket = std_socket.try_clone()?;
    let local = std_socket.local_addr()?;
    let (outbound, sent) = spawn_sender(std_socket)?;
    let reader_stop = shutdown.child_token();
    let _stop_reader_on_return = reader_stop.clone().drop_guard();
    let reader = Reader {
        queue: tx,
        queued: queued.clone(),
        limit: config.ingress_queue.max(1),
        retry_after: config.layer.retry_after_secs,
        metrics: metrics.clone(),
        counters: counters.clone(),
        shed_log: std::cell::Cell::new((None, 0)),
    };
    let reader_thread = spawn_socket_thread("sip-udp-reader", reader_socket, move |socket| {
        reader.run(socket, reader_stop)
    })?;
    let mut layer = TransactionLayer::new(config.layer);
    let mut last_yield = Instant::now();
    loop {
        let deadline = match (layer.poll_timeout(), user.next_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            received = rx.recv() => {
                let Some(batch) = received else { break };
                let now = tokio::time::Instant::now().into_std();
                feed(&mut layer, &queued, metrics.as_ref(), now, batch);
                // Take what else is already queued before flushing.
                for _ in 0..16 {
                    match rx.try_recv() {
                        Ok(batch) => feed(&mut layer, &queued, metrics.as_ref(), now, batch),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(deadline) => {}
        }
        let now = tokio::time::Instant::now().into_std();
        let mut events = 0usize;
        // Timers fire here, not only when the queue is idle: under sustained load the
        // biased select always finds a batch, and retransmissions must not starve.
        if layer.poll_timeout().is_some_and(|at| at <= now) {
            layer.handle_timeout(now);
        }
        while let Some(event) = layer.poll_event() {
            // One span per call: every log line the TU writes carries the Call-ID.
            let call_id = match &event {
                Event::Request { ids, .. }
                | Event::Ack { ids, .. }
                | Event::Response { ids, .. }
                | Event::Stray2xx { ids, .. } => ids.call_id.as_ref().map(|c| c.as_str()),
                _ => None,
            };
            let span = tracing::info_span!("sip", call_id = call_id.unwrap_or("-"));
            span.in_scope(|| user.on_event(now, event, &mut layer));
            events += 1;
        }
        if user.next_timer().is_some_and(|at| at <= now) {
            user.on_timer(now, &mut layer);
        }
        // Counters first: whoever gets our answer can already read them.
        if let Some(m) = metrics.as_mut() {
            m.update(&layer.stats(), layer.len());
        }
        // The sender thread writes them: a datagram to the loopback or a NIC costs the
        // sending thread the whole delivery path, and that is time the core would not
        // handle messages in.
        let mut transmits = Vec::new();
        while let Some(t) = layer.poll_transmit() {
            transmits.push(t);
        }
        if !transmits.is_empty() && outbound.send(transmits).is_err() {
            tracing::error!("SIP sender thread gone");
            break;
        }
        // Under sustained load every receive finds a batch and this task would keep
        // its worker: the media relays sharing the runtime would wait for tokio's
        // budget to run out (hundreds of milliseconds at thousands of calls a second:
        // RTP held back, ended calls' legs not let go). Yield at least this often.
        let busy = now.elapsed();
        if last_yield.elapsed() >= YIELD_EVERY {
            let yielded = Instant::now();
            tokio::task::yield_now().await;
            last_yield = Instant::now();
            let held = last_yield - yielded;
            if held >= SLOW_ROUND {
                tracing::warn!(
                    held_ms = held.as_millis() as u64,
                    "other tasks on the runtime held the SIP core back"
                );
            }
        }
        // A core that holds on to one round this long makes peers retransmit (T1).
        if busy >= SLOW_ROUND {
            tracing::warn!(
                busy_ms = busy.as_millis() as u64,
                events,
                "SIP core round was slow"
            );
        }
    }
    // What the last rounds wrote goes out before we return.
    drop(outbound);
    let _ = sent.await;
    // The reader lets go of the socket before we return: whoever binds the address next
    // (a restart, a standby taking over) finds it free.
    drop(_stop_reader_on_return);
    wake_reader(local);
    let _ = tokio::task::spawn_blocking(move || reader_thread.join()).await;
    let mut stats = layer.stats();
    stats.rejected_malformed += counters.malformed.load(Ordering::Relaxed);
    stats.rejected_overload += counters.shed.load(Ordering::Relaxed);
    Ok(stats)
}

/// Starts the thread that sends what the core writes, in order, on `socket`; returns
/// its queue (a batch a core round) and what resolves once it has sent everything
/// queued before the queue was dropped.
fn spawn_sender(
    socket: std::net::UdpSocket,
) -> std::io::Result<(
    std::sync::mpsc::Sender<Vec<Transmit>>,
    tokio::sync::oneshot::Receiver<()>,
)> {
    let (outbound, queue) = std::sync::mpsc::channel::<Vec<Transmit>>();
    let (done, sent) = tokio::sync::oneshot::channel();
    let _sender = spawn_socket_thread("sip-udp-sender", socket, move |socket| {
        // Blocking: the thread sleeps on its queue and in sendto, not in a reactor.
        while let Ok(batch) = queue.recv() {
            for t in batch {
                if let Err(e) = socket.send_to(&t.bytes, t.destination) {
                    tracing::warn!(destination = %t.destination, error = %e, "SIP send failed");
                }
            }
        }
        // The socket is closed before run_udp learns we are done: it returns with the
        // address free.
        drop(socket);
        let _ = done.send(());
    })?;
    Ok((outbound, sent))
}

/// Runs `task` with `socket` (blocking) on a thread of its own called `name`, so that
/// it is not delayed by (nor delays) the core's runtime. A plain blocking thread: a
/// reactor would cost each wake-up a failed read and an epoll_wait more.
fn spawn_socket_thread<F>(
    name: &'static str,
    socket: std::net::UdpSocket,
    task: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(std::net::UdpSocket) + Send + 'static,
{
    socket.set_nonblocking(false)?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || task(socket))
}

/// Wakes a reader blocked on the socket bound to `local` with an empty datagram, so
/// that it sees it was stopped now rather than within [`READER_WAKE`].
fn wake_reader(local: SocketAddr) {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (loopback, any): (IpAddr, IpAddr) = match local {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST.into(), Ipv4Addr::UNSPECIFIED.into()),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::UNSPECIFIED.into()),
    };
    let mut target = local;
    if target.ip().is_unspecified() {
        target.set_ip(loopback);
    }
    if let Ok(waker) = std::net::UdpSocket::bind(SocketAddr::new(any, 0)) {
        let _ = waker.send_to(&[], target);
    }
}

/// Asks for a `bytes` receive buffer; warns when the kernel gives less.
fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: usize) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(bytes) {
        tracing::warn!(bytes, error = %e, "SIP receive buffer not set");
        return;
    }
    // Linux grants min(asked, net.core.rmem_max) and reports twice that (its
    // bookkeeping overhead included).
    match socket.recv_buffer_size() {
        Ok(got) if got / 2 < bytes => tracing::warn!(
            asked = bytes,
            got = got / 2,
            "SIP receive buffer capped by the kernel: raise net.core.rmem_max"
        ),
        Ok(got) => tracing::debug!(bytes = got, "SIP receive buffer"),
        Err(e) => tracing::debug!(error = %e, "SIP receive buffer size unknown"),
    }
}

/// A round of the core (events handled, answers sent) longer than this is logged.
const SLOW_ROUND: std::time::Duration = std::time::Duration::from_millis(100);

/// The core lets other tasks on its runtime (media relays, above all) run at least
/// this often: a few milliseconds of RTP delay at most, against a 20 ms packet time.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

fn feed(
    layer: &mut TransactionLayer,
    queued: &AtomicUsize,
    metrics: Option<&SipMetrics>,
    now: Instant,
    (received, batch): Received,
) {
    queued.fetch_sub(batch.len(), Ordering::Relaxed);
    if let Some(m) = metrics {
        // Each message of the batch waited this long (a round takes several batches
        // with one `now`: the clock is read again for each).
        m.ingress_taken(batch.len(), received.elapsed());
    }
    for (source, inbound, ids) in batch {
        layer.handle_parsed(now, source, inbound, ids);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The socket reader: receives, parses, answers what is malformed, sheds what does not
/// fit, and hands the rest to the core in batches.
struct Reader {
    queue: mpsc::UnboundedSender<Received>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    retry_after: u32,
    metrics: Option<SipMetrics>,
    counters: Arc<ReaderCounters>,
    /// When shedding was last logged, and what was shed since (a line a message
    /// would add its own cost to an overload).
    shed_log: std::cell::Cell<(Option<Instant>, u64)>,
}

/// How many times the ingress limit messages that move on what is already up
/// (responses, ACK, CANCEL, in-dialog requests) may queue before they too are shed.
const IN_PROGRESS_ROOM: usize = 4;

/// Shedding is logged at most this often, with what was shed since.
const SHED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Datagrams taken per wake-up (one recvmmsg) before handing a batch to the core.
const READ_BATCH: usize = 32;

/// How often a reader with nothing to read looks whether it should stop.
const READER_WAKE: std::time::Duration = std::time::Duration::from_millis(100);

impl Reader {
    /// Reads until `shutdown` is cancelled (noticed within [`READER_WAKE`]) or the core
    /// is gone. Each wake-up takes what the kernel holds, up to [`READ_BATCH`]
    /// datagrams, in one recvmmsg that sleeps in the kernel until the first arrives.
    fn run(self, socket: std::net::UdpSocket, shutdown: CancellationToken) {
        use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        if let Err(e) = socket.set_read_timeout(Some(READER_WAKE)) {
            tracing::error!(error = %e, "SIP reader: no read timeout, shutdown will wait for a datagram");
        }
        // One byte more than the largest datagram we accept, to notice truncation.
        let mut buffers = vec![vec![0u8; MAX_DATAGRAM + 1]; READ_BATCH];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(READ_BATCH, None);
        let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(READ_BATCH);
        while !shutdown.is_cancelled() {
            received.clear();
            {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                    buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                match recvmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_WAITFORONE,
                    None,
                ) {
                    Ok(messages) => received.extend(
                        messages.map(|m| (m.bytes, m.address.and_then(|a| socket_addr(&a)))),
                    ),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                    // ICMP port unreachable surfaces here on some systems; keep going.
                    Err(e) => {
                        tracing::debug!(error = %e, "SIP receive error");
                        continue;
                    }
                }
            }
            let received_at = Instant::now();
            let mut batch = Vec::with_capacity(received.len());
            for (&(len, source), buffer) in received.iter().zip(&buffers) {
                // An empty datagram is no SIP: the wake-up at shutdown, or a probe.
                let (Some(source), 1..) = (source, len) else {
                    continue;
                };
                if let Some(item) = self.admit(&socket, source, &buffer[..len]) {
                    batch.push(item);
                }
            }
            if batch.is_empty() {
                continue;
            }
            // Counted before it is sent, so the core's count down never comes first.
            if let Some(m) = &self.metrics {
                m.ingress_queued(batch.len());
            }
            if self.queue.send((received_at, batch)).is_err() {
                return;
            }
        }
    }

    /// Logs shedding: the first message shed, then at most once per
    /// [`SHED_LOG_EVERY`] with how many were shed since.
    fn log_shed(&self, source: SocketAddr) {
        let (last, mut since) = self.shed_log.get();
        since += 1;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < SHED_LOG_EVERY) {
            self.shed_log.set((last, since));
            return;
        }
        tracing::warn!(
            %source,
            shed = since,
            "SIP ingress queue full: shedding with 503 (new requests first)"
        );
        self.shed_log.set((Some(now), 0));
    }

    /// Parses one datagram; answers or drops it here, or returns it for the core.
    fn admit(
        &self,
        socket: &std::net::UdpSocket,
        source: SocketAddr,
        bytes: &[u8],
    ) -> Option<Parsed> {
        if bytes.len() > MAX_DATAGRAM {
            tracing::warn!(%source, "dropped oversized SIP datagram");
            return None;
        }
        let (inbound, ids) = match parse_datagram_with_ids(bytes) {
            Ok((Inbound::KeepAlive, _)) => return None,
            Ok(parsed) => parsed,
            Err(rejection) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.malformed();
                }
                tracing::debug!(%source, detail = %rejection.detail, status = ?rejection.status, "rejected SIP message");
                if let Some(response) = rejection.response() {
                    let _ = socket.send_to(&response.to_wire(), source);
                }
                return None;
            }
        };
        // New work (a request outside any dialog: a new call, a registration) is
        // admitted while fewer than `limit` messages wait; what moves on what is
        // already up (responses, ACK, CANCEL, requests inside a dialog) while fewer
        // than `IN_PROGRESS_ROOM` times that do. Shedding a 200, an ACK or a BYE
        // would fail calls the TPO already took on (their peers retransmit, adding
        // load), where refusing new INVITEs sheds load. Which kind a message is only
        // matters past `limit`, so it is only looked at then.
        let waiting = self.queued.fetch_add(1, Ordering::Relaxed);
        let new_work = || match &inbound {
            Inbound::Request(request) => {
                !matches!(request.method, Method::Ack | Method::Cancel) && ids.to_tag.is_none()
            }
            _ => false,
        };
        if waiting < self.limit
            || (waiting < self.limit.saturating_mul(IN_PROGRESS_ROOM) && !new_work())
        {
            return Some((source, inbound, ids));
        }
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.counters.shed.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.shed();
        }
        self.log_shed(source);
        // Overload: answer requests 503 + Retry-After without creating any state.
        if let Inbound::Request(request) = &inbound
            && request.method != Method::Ack
        {
            let response = with_header(
                response_to(request, 503, Some(&Tag::generate())),
                Header::RetryAfter(RetryAfter::new(self.retry_after.to_string())),
            );
            let _ = socket.send_to(&response.to_wire(), source);
        }
        None
    }
}

/// The IP address and port of a datagram's source.
fn socket_addr(address: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}
