//! What the TPO learns from the TSS (`GET /api/tpo/config`): device credentials (HA1
//! only), users, lines and appearances, the dial plan. Polled with the store revision
//! as ETag, so an unchanged store costs a 304; the last good configuration stays in
//! force while the TSS is unreachable.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// `[tss]`: where the configuration comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TssSection {
    /// The TSS API base: `https://HOST:PORT` (or `http://` behind a trusted proxy).
    pub url: String,
    /// Other TSSs of the active/active set (same store), tried in order when the one
    /// in use cannot be reached.
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    /// Bearer token (one of the TSS's `[api] tpo_tokens`).
    pub token: String,
    /// PEM file of the CA that signs the TSS's certificate.
    pub ca_file: String,
    /// How often to ask for changes.
    pub poll_interval_ms: u64,
}

/// A device credential as the TSS hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Device {
    pub username: String,
    pub device_id: String,
    pub user: String,
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

/// One appearance of a line on a user's turret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Appearance {
    pub user: String,
    pub line: String,
    pub access: String,
    pub button: u32,
}

/// A line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Line {
    pub id: String,
    pub kind: String,
    pub number: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub far_end: Option<String>,
}

/// A user: the site decides where the user's calls are recorded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub site: String,
}

/// A site: its recorders (`host:port`), where its users' calls are recorded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Site {
    pub name: String,
    #[serde(default)]
    pub recorders: Vec<String>,
}

/// One dial-plan rule (longest matching prefix wins).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DialPlanRule {
    pub prefix: String,
    /// `internal`, `sbc` or `refuse`.
    pub route: String,
}

/// The configuration as of one TSS revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TpoConfig {
    pub revision: i64,
    pub devices: Vec<Device>,
    pub lines: Vec<Line>,
    pub appearances: Vec<Appearance>,
    #[serde(default)]
    pub dial_plan: Vec<DialPlanRule>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub sites: Vec<Site>,
    /// Device username → index in `devices` (built by [`TpoConfig::indexed`], as are
    /// the maps below: a call's routing looks its lines, appearances and devices up
    /// instead of reading the whole floor's configuration).
    #[serde(skip)]
    by_username: HashMap<String, usize>,
    /// Line number → indexes in `lines`, in configuration order.
    #[serde(skip)]
    lines_by_number: HashMap<String, Vec<usize>>,
    /// Line id → indexes in `appearances` of its talk appearances.
    #[serde(skip)]
    talk_by_line: HashMap<String, Vec<usize>>,
    /// User → indexes in `devices`.
    #[serde(skip)]
    devices_by_user: HashMap<String, Vec<usize>>,
    /// User name → index in `users` (the first of that name).
    #[serde(skip)]
    user_by_name: HashMap<String, usize>,
}

/// Largest configuration body accepted from the TSS.
const MAX_CONFIG_BYTES: usize = 64 * 1024 * 1024;

/// Bound on one whole fetch (connect, TLS, request, body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

impl TpoConfig {
    /// Builds the lookup index; call once after parsing.
    pub fn indexed(mut self) -> Self {
        self.by_username = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.username.clone(), i))
            .collect();
        let (mut lines, mut talk, mut devices) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (i, line) in self.lines.iter().enumerate() {
            lines
                .entry(line.number.clone())
                .or_insert_with(Vec::new)
                .push(i);
        }
        for (i, a) in self.appearances.iter().enumerate() {
            if a.access == "talk" {
                talk.entry(a.line.clone()).or_insert_with(Vec::new).push(i);
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            devices
                .entry(d.user.clone())
                .or_insert_with(Vec::new)
                .push(i);
        }
        let mut users = HashMap::new();
        for (i, u) in self.users.iter().enumerate() {
            users.entry(u.name.clone()).or_insert(i);
        }
        (
            self.lines_by_number,
            self.talk_by_line,
            self.devices_by_user,
            self.user_by_name,
        ) = (lines, talk, devices, users);
        self
    }

    /// The lines numbered `number`, in configuration order.
    pub fn lines_numbered<'a>(&'a self, number: &str) -> impl Iterator<Item = &'a Line> + 'a {
        indexed(&self.lines, self.lines_by_number.get(number))
    }

    /// The talk appearances of line `line_id`, in configuration order.
    pub fn talk_appearances<'a>(
        &'a self,
        line_id: &str,
    ) -> impl Iterator<Item = &'a Appearance> + 'a {
        indexed(&self.appearances, self.talk_by_line.get(line_id))
    }

    /// The devices (turrets) of `user`, in configuration order.
    pub fn devices_of<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a Device> + 'a {
        indexed(&self.devices, self.devices_by_user.get(user))
    }

    /// The device whose credential username is `username`.
    pub fn device(&self, username: &str) -> Option<&Device> {
        self.by_username
            .get(username)
            .and_then(|&i| self.devices.get(i))
    }

    /// The recorders of `user`'s site, as addresses (entries that are not `IP:port`
    /// are skipped: the TPO does not resolve names).
    pub fn recorders_of(&self, user: &str) -> Vec<std::net::SocketAddr> {
        let site = self
            .user_by_name
            .get(user)
            .and_then(|&i| self.users.get(i))
            .map(|u| &u.site);
        let Some(site) = site else {
            return Vec::new();
        };
        self.sites
            .iter()
            .filter(|s| &s.name == site)
            .flat_map(|s| s.recorders.iter())
            .filter_map(|r| r.parse().ok())
            .collect()
    }

    /// Lines that appear on the turret of at least one of `users`, each once.
    pub fn lines_of(&self, users: &[&str]) -> Vec<&str> {
        let mut lines: Vec<&str> = self
            .appearances
            .iter()
            .filter(|a| users.contains(&a.user.as_str()))
            .map(|a| a.line.as_str())
            .collect();
        lines.sort_unstable();
        lines.dedup();
        lines
    }
}

/// The items of `list` at the positions an index entry holds (none without one).
fn indexed<'a, T>(
    list: &'a [T],
    positions: Option<&'a Vec<usize>>,
) -> impl Iterator<Item = &'a T> + 'a {
    positions
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|&i| list.get(i))
}

/// The configuration in force, shared with the SIP core.
pub type Shared = Arc<RwLock<Option<Arc<TpoConfig>>>>;

/// Reads the current configuration (None until the first fetch succeeded).
pub fn current(shared: &Shared) -> Option<Arc<TpoConfig>> {
    shared
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// An open HTTP/1.1 connection to one TSS, ready for its next request.
type KeptConnection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Connections a client keeps open to each TSS between requests, at most. The TPO
/// has two clients — the configuration poll and the call-record poster — each making
/// one request at a time, so each keeps one open in the steady state.
const KEPT_PER_TSS: usize = 2;

/// An HTTPS client for the TSS API. Connections are kept open (HTTP/1.1 keep-alive)
/// and reused: a busy TPO posts a call record per call, and a connection per record
/// would cost a TCP (and TLS) handshake each and leave thousands of sockets in
/// TIME_WAIT.
#[derive(Clone)]
pub struct TssClient {
    /// `tss.url` first, then `tss.fallback_urls`.
    bases: Arc<Vec<hyper::Uri>>,
    /// The base that answered last: tried first.
    preferred: Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Idle connections, by index in `bases`.
    kept: Arc<std::sync::Mutex<Vec<Vec<KeptConnection>>>>,
    /// Connections opened so far (all TSSs).
    opened: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for TssClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TssClient")
            .field("bases", &self.bases)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A fetch's result.
#[derive(Debug)]
pub enum Fetched {
    Changed(Box<TpoConfig>),
    Unchanged,
}

impl TssClient {
    pub fn new(config: &TssSection) -> Result<Self> {
        let keys = std::iter::once(("tss.url".to_owned(), &config.url)).chain(
            config
                .fallback_urls
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("tss.fallback_urls[{i}]"), u)),
        );
        let mut bases = Vec::new();
        let mut any_https = false;
        for (key, url) in keys {
            let base: hyper::Uri = url
                .parse()
                .map_err(|e| Error::Config(format!("{key} {url:?}: {e}")))?;
            match base.scheme_str() {
                Some("https") => any_https = true,
                Some("http") => {}
                _ => {
                    return Err(Error::Config(format!(
                        "{key} {url:?}: not http:// or https://"
                    )));
                }
            }
            if base.host().is_none() {
                return Err(Error::Config(format!("{key} {url:?}: no host")));
            }
            bases.push(base);
        }
        let tls = if any_https {
            if config.ca_file.is_empty() {
                return Err(Error::Config(
                    "tss.ca_file: required with an https:// tss.url or tss.fallback_urls entry"
                        .into(),
                ));
            }
            let pem = std::fs::read(&config.ca_file)
                .map_err(|e| Error::Config(format!("tss.ca_file {}: {e}", config.ca_file)))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| Error::Config(format!("tss.ca_file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("tss.ca_file: {e}")))?;
            }
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(tls)))
        } else {
            None
        };
        Ok(TssClient {
            kept: Arc::new(std::sync::Mutex::new(
                bases.iter().map(|_| Vec::new()).collect(),
            )),
            bases: Arc::new(bases),
            preferred: Arc::default(),
            token: config.token.clone(),
            tls,
            opened: Arc::default(),
        })
    }

    /// Connections to a TSS opened so far: with keep-alive, a handful however many
    /// requests were made.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches the configuration unless it is still at `known_revision`; the whole
    /// exchange is bounded in time and size.
    pub async fn fetch(&self, known_revision: Option<i64>) -> Result<Fetched> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded(known_revision))
            .await
            .map_err(|_| {
                Error::Tss(format!(
                    "no complete answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn fetch_unbounded(&self, known_revision: Option<i64>) -> Result<Fetched> {
        let etag = known_revision
            .map(|r| format!("\"rev-{r}\""))
            .unwrap_or_default();
        let (status, body) = self
            .exchange(
                hyper::Method::GET,
                "/api/tpo/config",
                &[(hyper::header::IF_NONE_MATCH, etag)],
                Bytes::new(),
            )
            .await?;
        match status {
            304 => Ok(Fetched::Unchanged),
            200 => {
                let config: TpoConfig = serde_json::from_slice(&body)
                    .map_err(|e| Error::Tss(format!("configuration: {e}")))?;
                Ok(Fetched::Changed(Box::new(config.indexed())))
            }
            status => Err(Error::Tss(format!("GET /api/tpo/config answered {status}"))),
        }
    }

    /// Posts a JSON document to `path`; returns the status and the answer's body.
    /// Bounded like a fetch.
    pub async fn post_json(&self, path: &str, json: Vec<u8>) -> Result<(u16, Bytes)> {
        let headers = [(hyper::header::CONTENT_TYPE, "application/json".to_owned())];
        let exchange = self.exchange(hyper::Method::POST, path, &headers, Bytes::from(json));
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Tss(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))?
    }

    /// One request to the TSS in use; when it cannot be reached (connection, TLS,
    /// HTTP transport), to the next of `tss.url` and `tss.fallback_urls`, the one that
    /// answers becoming the one in use.
    async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(hyper::header::HeaderName, String)],
        body: Bytes,
    ) -> Result<(u16, Bytes)> {
        use std::sync::atomic::Ordering;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.bases.len() {
            let i = (first + step) % self.bases.len();
            // Each TSS gets its share of the whole bound, so one that accepts but never
            // answers cannot keep the next from being tried.
            let share = FETCH_TIMEOUT / self.bases.len().max(1) as u32;
            let attempt = self.exchange_at(i, method.clone(), path, headers, body.clone());
            let outcome = tokio::time::timeout(share, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Tss(format!(
                        "no answer within {} ms",
                        share.as_millis()
                    )))
                });
            match outcome {
                Ok(answer) => {
                    if i != first {
                        tracing::warn!(tss = %self.bases[i], "TSS in use now");
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::debug!(tss = %self.bases[i], error = %e, "TSS unreachable");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Tss("no TSS configured".into())))
    }

    /// One request to the TSS `bases[index]` (TLS when its URL says https): the status
    /// and the body (at most [`MAX_CONFIG_BYTES`]). A kept connection is used when
    /// there is one; should it turn out closed (the TSS closed it while idle, or
    /// restarted) before any answer came, the request goes again on a new connection.
    /// That may send it twice, which is safe: the TSS answers the same GET alike and
    /// ingests call records idempotently by `record_id`. A TSS that does not answer in
    /// time, or whose answer breaks off, is not asked again here.
    async fn exchange_at(
        &self,
        index: usize,
        method: hyper::Method,
        path: &str,
        headers: &[(hyper::header::HeaderName, String)],
        body: Bytes,
    ) -> Result<(u16, Bytes)> {
        let base = &self.bases[index];
        // `[::1]` in a URL is `::1` to connect to and to check the certificate for.
        let host = base
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let request = || {
            let mut request = hyper::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, host)
                .header(
                    hyper::header::AUTHORIZATION,
                    format!("Bearer {}", self.token),
                );
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request
                .body(Full::new(body.clone()))
                .map_err(|e| Error::Tss(e.to_string()))
        };
        while let Some(kept) = self.take_kept(index) {
            match self.send(index, kept, request()?).await {
                Ok(answer) => return Ok(answer),
                Err(SendFailure::Stale(e)) => {
                    tracing::debug!(tss = %base, error = %e, "kept TSS connection was closed; trying a new one");
                }
                Err(SendFailure::Failed(e)) => return Err(e),
            }
        }
        let connection = self.connect(base, host).await?;
        self.send(index, connection, request()?)
            .await
            .map_err(SendFailure::into_error)
    }

    /// An idle kept connection to `bases[index]` that can take a request now.
    fn take_kept(&self, index: usize) -> Option<KeptConnection> {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = kept.get_mut(index)?;
        while let Some(connection) = list.pop() {
            if connection.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    /// Opens a connection to `base` (TCP, then TLS when it says https).
    async fn connect(&self, base: &hyper::Uri, host: &str) -> Result<KeptConnection> {
        let https = base.scheme_str() == Some("https");
        let port = base.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| Error::Tss(format!("connecting to {host}:{port} timed out")))?
        .map_err(|e| Error::Tss(format!("connecting to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.tls.as_ref().filter(|_| https) {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| Error::Tss(format!("tss host {host}: {e}")))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Error::Tss(format!("TLS with the TSS: {e}")))?;
                handshake(hyper_util::rt::TokioIo::new(stream)).await
            }
            None => handshake(hyper_util::rt::TokioIo::new(tcp)).await,
        }
    }

    /// Sends `request` on `connection` and reads the whole answer; the connection is
    /// kept for the next request when it can take one.
    async fn send(
        &self,
        index: usize,
        mut connection: KeptConnection,
        request: hyper::Request<Full<Bytes>>,
    ) -> std::result::Result<(u16, Bytes), SendFailure> {
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            connection.try_send_request(request),
        )
        .await
        .map_err(|_| {
            SendFailure::Failed(Error::Tss("the TSS did not answer within 10 s".into()))
        })?;
        let response = match sent {
            Ok(response) => response,
            Err(failure) => {
                // Not sent at all (the message came back), or sent on a connection
                // the TSS had closed before answering anything.
                let stale = failure.message().is_some()
                    || failure.error().is_canceled()
                    || failure.error().is_incomplete_message();
                let error = Error::Tss(format!("HTTP with the TSS: {}", failure.error()));
                return Err(if stale {
                    SendFailure::Stale(error)
                } else {
                    SendFailure::Failed(error)
                });
            }
        };
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_CONFIG_BYTES)
            .collect()
            .await
            .map_err(|e| SendFailure::Failed(Error::Tss(format!("reading the answer: {e}"))))?
            .to_bytes();
        // The connection takes the next request once hyper has seen the end of this
        // answer; one the TSS is closing (`Connection: close`) reports closed.
        if tokio::time::timeout(Duration::from_secs(1), connection.ready())
            .await
            .is_ok_and(|ready| ready.is_ok())
        {
            let mut kept = self
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(list) = kept.get_mut(index).filter(|l| l.len() < KEPT_PER_TSS) {
                list.push(connection);
            }
        }
        Ok((status, body))
    }
}

/// Why a request on one connection failed.
enum SendFailure {
    /// The connection was closed before the TSS answered anything: the request may go
    /// again on another.
    Stale(Error),
    /// The TSS was too slow, or its answer broke off or was too long.
    Failed(Error),
}

impl SendFailure {
    fn into_error(self) -> Error {
        match self {
            SendFailure::Stale(e) | SendFailure::Failed(e) => e,
        }
    }
}

/// The HTTP/1.1 handshake on a new connection; the connection is driven by its own
/// task until the TSS or this side closes it.
async fn handshake<IO>(io: IO) -> Result<KeptConnection>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Error::Tss(format!("HTTP with the TSS: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Keeps `shared` up to date until `shutdown`; `on_change` is told each new revision.
pub async fn poll(
    client: TssClient,
    every: Duration,
    shared: Shared,
    shutdown: CancellationToken,
    on_change: impl Fn(&TpoConfig) + Send,
) {
    let mut failing = false;
    loop {
        let known = current(&shared).map(|c| c.revision);
        match client.fetch(known).await {
            Ok(Fetched::Changed(config)) => {
                tracing::info!(
                    revision = config.revision,
                    devices = config.devices.len(),
                    "configuration from the TSS"
                );
                on_change(&config);
                *shared
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(*config));
                failing = false;
            }
            Ok(Fetched::Unchanged) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "TSS unreachable; keeping the configuration in force");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The indexes answer what a search of the lists would, in configuration order:
    /// lines by number (two may share one), talk appearances only, devices by user,
    /// recorders through the user's site.
    #[test]
    fn the_indexes_answer_as_the_lists_would() {
        let device = |username: &str, user: &str| {
            serde_json::json!({"username": username, "device_id": username, "user": user,
                "realm": "floorwire", "ha1_md5": "", "ha1_sha256": ""})
        };
        let config: TpoConfig = serde_json::from_value(serde_json::json!({
            "revision": 1,
            "devices": [device("t1", "alice"), device("t2", "bob"), device("t3", "alice")],
            "lines": [
                {"id": "L1", "kind": "dial_tone", "number": "7100"},
                {"id": "PW", "kind": "private_wire", "number": "7100", "far_end": "7200"},
                {"id": "L2", "kind": "dial_tone", "number": "7101"}
            ],
            "appearances": [
                {"user": "alice", "line": "L1", "access": "talk", "button": 1},
                {"user": "bob", "line": "L1", "access": "listen", "button": 1},
                {"user": "bob", "line": "PW", "access": "talk", "button": 2},
                {"user": "bob", "line": "L1", "access": "talk", "button": 3}
            ],
            "users": [{"name": "alice", "site": "paris"}, {"name": "bob", "site": "none"}],
            "sites": [{"name": "paris", "recorders": ["127.0.0.1:5070", "recorder.example"]}]
        }))
        .expect("a configuration");
        let config = config.indexed();
        let ids = |lines: Vec<&Line>| lines.iter().map(|l| l.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(config.lines_numbered("7100").collect()), ["L1", "PW"]);
        assert_eq!(
            ids(config.lines_numbered("7999").collect()),
            Vec::<String>::new()
        );
        let talk: Vec<_> = config
            .talk_appearances("L1")
            .map(|a| (a.user.as_str(), a.button))
            .collect();
        assert_eq!(talk, [("alice", 1), ("bob", 3)]);
        let alice: Vec<_> = config
            .devices_of("alice")
            .map(|d| d.username.as_str())
            .collect();
        assert_eq!(alice, ["t1", "t3"]);
        assert_eq!(config.devices_of("carol").count(), 0);
        assert_eq!(
            config.recorders_of("alice"),
            vec!["127.0.0.1:5070".parse::<std::net::SocketAddr>().unwrap()]
        );
        assert!(config.recorders_of("bob").is_empty());
    }
}
