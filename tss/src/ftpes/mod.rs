//! FTPES provisioning: turrets log in with the user's name and password over explicit
//! TLS and download their profile and software.
//!
//! Two parts on one host:
//! - the **gate** (this module, policy in [`gate`]) owns the public control port: it
//!   answers `AUTH TLS`, terminates the control channel's TLS, checks the login
//!   ([`crate::auth::Authenticator`]: directory or user table, throttled), enforces
//!   `PROT P` before every data channel, and forwards the rest over loopback;
//! - the **file server** (libunftp, [`storage::ProfileStorage`]) on a loopback port
//!   that accepts only one-time login tokens minted by the gate; it opens the passive
//!   data ports on the public address (from the configured range) and runs every data
//!   channel under TLS with the same certificate.

pub mod gate;
pub mod storage;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use unftp_core::auth::{
    AuthenticationError, Authenticator as FtpAuthenticator, Credentials, Principal,
    UserDetailError, UserDetailProvider,
};

use crate::auth::Authenticator;
use crate::error::{Error, Result};
use crate::store::Store;
use gate::{Action, ControlPolicy};
use storage::{ProfileStorage, TurretUser};

/// `[ftpes]`: the provisioning server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpesSection {
    pub enabled: bool,
    /// Public control port (explicit TLS: `AUTH TLS`). Production: port 21.
    pub listen: SocketAddr,
    /// Passive data ports, opened by the gate on the address each turret reached.
    pub passive_port_first: u16,
    pub passive_port_last: u16,
    /// PEM certificate chain and key; both empty: a self-signed certificate for the
    /// listen address is made at start (the lab).
    pub cert_file: String,
    pub key_file: String,
    /// Where the software packages' files are.
    pub software_dir: String,
    pub idle_timeout_secs: u64,
    /// Most turret sessions at once; beyond it new ones get 421.
    pub max_sessions: usize,
    /// From connecting to logged in (TLS included), at most this long; then 421.
    pub login_timeout_secs: u64,
}

/// Longest command line accepted from a turret.
const MAX_LINE: usize = 4096;
/// How long a gate-minted login token is valid upstream.
const TOKEN_TTL: Duration = Duration::from_secs(30);

/// One-time login tokens: the gate mints one per successful login, the file server's
/// authenticator consumes it.
#[derive(Debug, Default, Clone)]
struct Tokens(Arc<Mutex<HashMap<String, (String, Instant)>>>);

impl Tokens {
    fn mint(&self, user: &str) -> String {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        map.insert(token.clone(), (user.to_owned(), Instant::now()));
        token
    }

    fn take(&self, user: &str, token: &str) -> bool {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.remove(token) {
            Some((u, at)) => u == user && at.elapsed() < TOKEN_TTL,
            None => false,
        }
    }
}

#[async_trait::async_trait]
impl FtpAuthenticator for Tokens {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> std::result::Result<Principal, AuthenticationError> {
        match &creds.password {
            Some(token) if self.take(username, token) => Ok(Principal {
                username: username.to_owned(),
            }),
            _ => Err(AuthenticationError::BadPassword),
        }
    }
}

#[derive(Debug)]
struct TurretUsers;

#[async_trait::async_trait]
impl UserDetailProvider for TurretUsers {
    type User = TurretUser;

    async fn provide_user_detail(
        &self,
        principal: &Principal,
    ) -> std::result::Result<TurretUser, UserDetailError> {
        Ok(TurretUser {
            name: principal.username.clone(),
        })
    }
}

/// Passive ports the file server uses on loopback (outside Linux's default ephemeral
/// range); turrets never see them: the gate splices each data connection through.
const INTERNAL_PASSIVE_PORTS: RangeInclusive<u16> = 61000..=65535;

/// How long a passive data port waits for its turret to connect.
const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds a listener on `ip` with a port from `ports` (random start, first free).
fn bind_passive(ip: IpAddr, ports: &RangeInclusive<u16>) -> std::io::Result<TcpListener> {
    let span = u32::from(*ports.end()) - u32::from(*ports.start()) + 1;
    let offset = rand::random::<u32>() % span;
    for i in 0..span {
        let port = u16::try_from(u32::from(*ports.start()) + (offset + i) % span)
            .unwrap_or(*ports.start());
        let socket = if ip.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // Ports of finished transfers sit in TIME_WAIT; they are free to listen on.
        socket.set_reuseaddr(true)?;
        if socket.bind(SocketAddr::new(ip, port)).is_ok() {
            return socket.listen(1);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free passive port",
    ))
}

/// The file server's data port from its 227 or 229 reply.
fn upstream_data_port(reply: &str) -> Option<u16> {
    if reply.starts_with("229") {
        let inner = reply.split('(').nth(1)?.split(')').next()?;
        return inner.trim_matches('|').parse().ok();
    }
    if reply.starts_with("227") {
        let inner = reply.split('(').nth(1)?.split(')').next()?;
        let n: Vec<u16> = inner
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        if let [_, _, _, _, hi, lo] = n.as_slice() {
            return Some(hi * 256 + lo);
        }
    }
    None
}

/// A passive data port opened for a session and not yet connected to.
struct PendingData {
    task: tokio::task::JoinHandle<()>,
    accepted: Arc<std::sync::atomic::AtomicBool>,
}

impl PendingData {
    /// Closes the port if the turret never connected (a transfer under way goes on).
    fn release_unused(self) {
        if !self.accepted.load(std::sync::atomic::Ordering::Relaxed) {
            self.task.abort();
        }
    }
}

/// Waits for the turret (and only it) to connect to `listener`, then splices the
/// connection to the file server's data port. TLS runs end to end, turret to file
/// server; the gate only moves bytes.
async fn splice_data(
    listener: TcpListener,
    client_ip: IpAddr,
    upstream: SocketAddr,
    accepted_flag: Arc<std::sync::atomic::AtomicBool>,
) {
    let accepted = tokio::time::timeout(DATA_CONNECT_TIMEOUT, async {
        loop {
            let (stream, peer) = listener.accept().await?;
            if peer.ip() == client_ip {
                return Ok::<_, std::io::Error>(stream);
            }
            tracing::warn!(%peer, expected = %client_ip, "ftpes: data connection from another address refused");
        }
    })
    .await;
    drop(listener);
    let Ok(Ok(mut turret)) = accepted else { return };
    accepted_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let Ok(mut file_server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut turret, &mut file_server).await;
}

/// A running FTPES service.
#[derive(Debug)]
pub struct Ftpes {
    pub addr: SocketAddr,
}

/// Starts the gate and the file server; runs until `shutdown`.
pub async fn start(
    config: &FtpesSection,
    store: Store,
    auth: Arc<Authenticator>,
    metrics: crate::metrics::TssMetrics,
    realm: String,
    shutdown: CancellationToken,
) -> Result<(Ftpes, impl std::future::Future<Output = ()>)> {
    if config.idle_timeout_secs == 0 {
        return Err(Error::Config(
            "ftpes.idle_timeout_secs: must be at least 1".into(),
        ));
    }
    if config.login_timeout_secs == 0 {
        return Err(Error::Config(
            "ftpes.login_timeout_secs: must be at least 1".into(),
        ));
    }
    if config.max_sessions == 0 {
        return Err(Error::Config(
            "ftpes.max_sessions: must be at least 1".into(),
        ));
    }
    if INTERNAL_PASSIVE_PORTS.contains(&config.passive_port_first)
        || INTERNAL_PASSIVE_PORTS.contains(&config.passive_port_last)
    {
        return Err(Error::Config(format!(
            "ftpes.passive_port_first..passive_port_last: {}-{} is kept for the file server on loopback",
            INTERNAL_PASSIVE_PORTS.start(),
            INTERNAL_PASSIVE_PORTS.end()
        )));
    }
    if config.passive_port_first == 0 || config.passive_port_first > config.passive_port_last {
        return Err(Error::Config(
            "ftpes.passive_port_first..passive_port_last: an increasing range of non-zero ports"
                .into(),
        ));
    }
    let (cert, key) = crate::tls::certificate_files(
        "ftpes",
        &config.cert_file,
        &config.key_file,
        config.listen.ip(),
    )?;
    let acceptor = crate::tls::acceptor("ftpes", &cert, &key)?;
    let tokens = Tokens::default();
    let storage = ProfileStorage {
        store,
        software_dir: PathBuf::from(&config.software_dir),
        realm,
    };
    let builder = libunftp::ServerBuilder::with_authenticator(
        Box::new(move || storage.clone()),
        Arc::new(tokens.clone()),
    )
    .user_detail_provider(Arc::new(TurretUsers))
    .greeting("Floorwire TSS FTPES: AUTH TLS required")
    .ftps(cert, key)
    .ftps_required(
        libunftp::options::FtpsRequired::None,
        libunftp::options::FtpsRequired::All,
    )
    .passive_ports(INTERNAL_PASSIVE_PORTS)
    .idle_session_timeout(config.idle_timeout_secs)
    .metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let builder = builder.shutdown_indicator(async move {
        let _ = stop_rx.await;
        libunftp::options::Shutdown::new().grace_period(Duration::from_secs(5))
    });
    let server = builder
        .build()
        .map_err(|e| Error::Config(format!("ftpes: {e}")))?;
    // The file server listens on loopback only; the gate is its only client.
    let inner = std::net::TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0))?;
    let inner_addr = inner.local_addr()?;
    drop(inner);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("ftpes.listen {}: {e}", config.listen)))?;
    let addr = listener.local_addr()?;
    let file_server = tokio::spawn(async move {
        if let Err(e) = server.listen(inner_addr.to_string()).await {
            tracing::error!(error = %e, "ftpes file server stopped");
        }
    });
    let gate = Gate {
        acceptor,
        auth,
        metrics,
        tokens,
        upstream: inner_addr,
        passive_ports: config.passive_port_first..=config.passive_port_last,
        idle: Duration::from_secs(config.idle_timeout_secs),
        login_timeout: Duration::from_secs(config.login_timeout_secs),
    };
    let gate = Arc::new(gate);
    tracing::info!(%addr, "ftpes listening");
    let sessions = Arc::new(tokio::sync::Semaphore::new(config.max_sessions));
    let running = async move {
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((mut stream, peer)) => {
                        let Ok(permit) = sessions.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, "ftpes: session limit reached");
                            let _ = stream.write_all(b"421 Too many sessions; try later.\r\n").await;
                            continue;
                        };
                        let gate = gate.clone();
                        tracker.spawn(async move {
                            let _permit = permit;
                            if let Err(e) = gate.session(stream, peer).await {
                                tracing::debug!(%peer, error = %e, "ftpes session ended");
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "ftpes accept"),
                },
            }
        }
        let _ = stop_tx.send(());
        floorwire::service::shutdown::drain(&tracker, Duration::from_secs(5)).await;
        let _ = file_server.await;
    };
    Ok((Ftpes { addr }, running))
}

/// The public side: TLS, login and policy in front of the file server.
struct Gate {
    acceptor: tokio_rustls::TlsAcceptor,
    auth: Arc<Authenticator>,
    metrics: crate::metrics::TssMetrics,
    tokens: Tokens,
    upstream: SocketAddr,
    passive_ports: RangeInclusive<u16>,
    idle: Duration,
    login_timeout: Duration,
}

/// What came first while the gate waited for a command.
enum Waiting {
    Command,
    Unsolicited,
    Closed,
    Idle,
}

/// How a phase of a session ended.
enum PhaseEnd {
    StartTls,
    Closed,
}

/// The two ends of a turret's control connection.
#[derive(Debug, Clone, Copy)]
struct Ends {
    /// The turret.
    peer: SocketAddr,
    /// Our address as the turret reached it (data ports open there).
    local: SocketAddr,
    /// Logged in by then, or the session is closed (a slot held without logging in
    /// is a slot taken from the turrets).
    login_by: tokio::time::Instant,
}

impl Gate {
    /// Answers PASV/EPSV: the file server opened a loopback data port; open one in the
    /// public range on the address the turret reached, splice the two, and tell the
    /// turret ours.
    async fn passive<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        upstream: &mut BufStream<TcpStream>,
        client: &mut BufReader<S>,
        verb: &str,
        ends: Ends,
        pending: &mut Option<PendingData>,
    ) -> std::io::Result<u16> {
        // One waiting passive port per session: a new PASV/EPSV closes the unused one,
        // so a session cannot drain the public range. It closes once the new port is
        // bound, so the new port is never the one just given up (a client still
        // connecting to the old one cannot reach the new transfer).
        let previous = pending.take();
        let answer = self.passive_answer(upstream, verb, ends, pending).await;
        if let Some(previous) = previous {
            previous.release_unused();
        }
        let (answer, code) = answer?;
        client.get_mut().write_all(answer.as_bytes()).await?;
        client.get_mut().flush().await?;
        Ok(gate::final_code(answer.lines().last().unwrap_or_default()).unwrap_or(code))
    }

    /// The file server's answer to PASV/EPSV, with its data port replaced by a public
    /// one bound here (a new `pending`), and its code.
    async fn passive_answer(
        &self,
        upstream: &mut BufStream<TcpStream>,
        verb: &str,
        ends: Ends,
        pending: &mut Option<PendingData>,
    ) -> std::io::Result<(String, u16)> {
        let mut reply = Vec::new();
        let code = read_reply(upstream, &mut reply).await?;
        let text = String::from_utf8_lossy(&reply).into_owned();
        let answer = match upstream_data_port(&text) {
            Some(port) if code == 227 || code == 229 => match (verb, ends.local.ip()) {
                ("PASV", IpAddr::V6(_)) => {
                    "522 PASV cannot name an IPv6 address; use EPSV.\r\n".to_owned()
                }
                _ => match bind_passive(ends.local.ip(), &self.passive_ports) {
                    Ok(listener) => {
                        let public = listener.local_addr()?.port();
                        let upstream_data = SocketAddr::new(self.upstream.ip(), port);
                        let accepted = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        let task = tokio::spawn(splice_data(
                            listener,
                            ends.peer.ip(),
                            upstream_data,
                            accepted.clone(),
                        ));
                        *pending = Some(PendingData { task, accepted });
                        match ends.local.ip() {
                            IpAddr::V4(ip) if verb == "PASV" => {
                                let o = ip.octets();
                                format!(
                                    "227 Entering Passive Mode ({},{},{},{},{},{}).\r\n",
                                    o[0],
                                    o[1],
                                    o[2],
                                    o[3],
                                    public >> 8,
                                    public & 0xff
                                )
                            }
                            _ => format!("229 Entering Extended Passive Mode (|||{public}|).\r\n"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ftpes: no passive port free");
                        "425 No passive port free; try again.\r\n".to_owned()
                    }
                },
            },
            _ => text,
        };
        Ok((answer, code))
    }

    async fn session(&self, client: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let local = client.local_addr()?;
        let ends = Ends {
            peer,
            local,
            login_by: tokio::time::Instant::now() + self.login_timeout,
        };
        let mut upstream = BufStream::new(TcpStream::connect(self.upstream).await?);
        let mut client = BufReader::new(client);
        // The file server's greeting, relayed.
        relay_reply(&mut upstream, &mut client).await?;
        let mut policy = ControlPolicy::default();
        let mut pending: Option<PendingData> = None;
        match self
            .phase(&mut client, &mut upstream, &mut policy, ends, &mut pending)
            .await?
        {
            PhaseEnd::Closed => return Ok(()),
            PhaseEnd::StartTls => {}
        }
        if !client.buffer().is_empty() {
            // Commands pipelined after AUTH TLS would be read as if secured: refuse.
            return Ok(());
        }
        let tcp = client.into_inner();
        let tls = tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake"))??;
        let mut client = BufReader::new(tls);
        policy.secured();
        self.phase(&mut client, &mut upstream, &mut policy, ends, &mut pending)
            .await?;
        Ok(())
    }

    async fn phase<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut BufReader<S>,
        upstream: &mut BufStream<TcpStream>,
        policy: &mut ControlPolicy,
        ends: Ends,
        pending: &mut Option<PendingData>,
    ) -> std::io::Result<PhaseEnd> {
        let peer = ends.peer;
        loop {
            // While waiting for the next command, relay what the file server says by
            // itself (a 421 on idle, a late 425), so replies never fall out of step.
            let wait = if policy.is_logged_in() {
                self.idle
            } else {
                ends.login_by
                    .saturating_duration_since(tokio::time::Instant::now())
            };
            if wait.is_zero() {
                client
                    .get_mut()
                    .write_all(b"421 Login took too long; closing.\r\n")
                    .await?;
                client.get_mut().flush().await?;
                return Ok(PhaseEnd::Closed);
            }
            let event = tokio::select! {
                r = client.fill_buf() => r.map(|b| if b.is_empty() { Waiting::Closed } else { Waiting::Command }),
                r = upstream.fill_buf() => r.map(|b| if b.is_empty() { Waiting::Closed } else { Waiting::Unsolicited }),
                _ = tokio::time::sleep(wait) => Ok(Waiting::Idle),
            }?;
            match event {
                Waiting::Closed => return Ok(PhaseEnd::Closed),
                // Not logged in by the deadline: answered 421 at the top of the loop.
                Waiting::Idle if !policy.is_logged_in() => continue,
                Waiting::Idle => return Ok(PhaseEnd::Closed),
                Waiting::Unsolicited => {
                    relay_reply(upstream, client).await?;
                    continue;
                }
                Waiting::Command => {}
            }
            let line = match read_line(client, self.idle).await? {
                None => return Ok(PhaseEnd::Closed),
                Some(Line::TooLong) => {
                    client
                        .get_mut()
                        .write_all(b"500 Command line too long.\r\n")
                        .await?;
                    client.get_mut().flush().await?;
                    continue;
                }
                Some(Line::Command(line)) => line,
            };
            match policy.on_command(&line) {
                Action::Reply(reply) => {
                    client.get_mut().write_all(reply.as_bytes()).await?;
                    client.get_mut().flush().await?;
                }
                Action::StartTls => {
                    client
                        .get_mut()
                        .write_all(b"234 AUTH TLS accepted; start the handshake.\r\n")
                        .await?;
                    client.get_mut().flush().await?;
                    return Ok(PhaseEnd::StartTls);
                }
                Action::Forward => {
                    let verb = gate::split(&line).0;
                    // One command, one line, CRLF: nothing else reaches the file server.
                    let command = format!("{}\r\n", line.trim_end_matches(['\r', '\n']));
                    upstream.write_all(command.as_bytes()).await?;
                    upstream.flush().await?;
                    let code = if verb == "PASV" || verb == "EPSV" {
                        self.passive(upstream, client, &verb, ends, pending).await?
                    } else {
                        relay_reply(upstream, client).await?
                    };
                    policy.on_reply(code);
                    if verb == "QUIT" {
                        return Ok(PhaseEnd::Closed);
                    }
                }
                Action::Login { user, password } => {
                    let result = self.auth.login(&user, &password, peer.ip()).await;
                    self.metrics.login(crate::metrics::login_result(&result));
                    match result {
                        Ok(identity) => {
                            let token = self.tokens.mint(&identity.name);
                            upstream
                                .write_all(format!("USER {}\r\n", identity.name).as_bytes())
                                .await?;
                            upstream.flush().await?;
                            let mut sink = Vec::new();
                            read_reply(upstream, &mut sink).await?;
                            upstream
                                .write_all(format!("PASS {token}\r\n").as_bytes())
                                .await?;
                            upstream.flush().await?;
                            let code = relay_reply(upstream, client).await?;
                            policy.logged_in(code == 230);
                            if code == 230 {
                                tracing::info!(user = %identity.name, %peer, "ftpes login");
                            }
                        }
                        Err(Error::DirectoryUnavailable(_)) => {
                            client
                                .get_mut()
                                .write_all(b"421 Login service unavailable; try later.\r\n")
                                .await?;
                            client.get_mut().flush().await?;
                            return Ok(PhaseEnd::Closed);
                        }
                        Err(_) => {
                            client
                                .get_mut()
                                .write_all(b"530 Login incorrect.\r\n")
                                .await?;
                            client.get_mut().flush().await?;
                        }
                    }
                }
            }
        }
    }
}

/// One command line as read from a turret.
enum Line {
    Command(String),
    /// Longer than [`MAX_LINE`]: read to its end and dropped.
    TooLong,
}

/// Reads one command line (CRLF kept); `None` at EOF or idle timeout.
async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut BufReader<S>,
    idle: Duration,
) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    let read = tokio::time::timeout(idle, async {
        loop {
            let available = client.fill_buf().await?;
            if available.is_empty() {
                return Ok::<_, std::io::Error>(false);
            }
            let (used, done) = match memchr_newline(available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                buf.extend_from_slice(&available[..used]);
            }
            client.consume(used);
            if buf.len() > MAX_LINE {
                too_long = true;
                buf.clear();
            }
            if done {
                return Ok(true);
            }
        }
    })
    .await;
    match read {
        Ok(Ok(true)) if too_long => Ok(Some(Line::TooLong)),
        Ok(Ok(true)) => Ok(Some(Line::Command(
            String::from_utf8_lossy(&buf).into_owned(),
        ))),
        Ok(Ok(false)) | Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Reads one reply line from the file server; with its code when it ends a reply
/// (a final, non-1xx one).
async fn reply_line(upstream: &mut BufStream<TcpStream>) -> std::io::Result<(String, Option<u16>)> {
    let mut line = String::new();
    if upstream.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file server closed",
        ));
    }
    let end = gate::final_code(&line).filter(|code| !(100..200).contains(code));
    Ok((line, end))
}

/// Reads one whole reply (through preliminary 1xx replies to the final one) into
/// `out`; returns the final code.
async fn read_reply(
    upstream: &mut BufStream<TcpStream>,
    out: &mut Vec<u8>,
) -> std::io::Result<u16> {
    loop {
        let (line, end) = reply_line(upstream).await?;
        out.extend_from_slice(line.as_bytes());
        if let Some(code) = end {
            return Ok(code);
        }
    }
}

/// Relays one whole reply from the file server to the client, flushing each line (a
/// 150 must reach the client before the transfer ends).
async fn relay_reply<S: AsyncRead + AsyncWrite + Unpin>(
    upstream: &mut BufStream<TcpStream>,
    client: &mut BufReader<S>,
) -> std::io::Result<u16> {
    loop {
        let (line, end) = reply_line(upstream).await?;
        client.get_mut().write_all(line.as_bytes()).await?;
        client.get_mut().flush().await?;
        if let Some(code) = end {
            return Ok(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_server_data_ports_are_read_from_its_replies() {
        assert_eq!(
            upstream_data_port("229 Entering Extended Passive Mode (|||61234|)\r\n"),
            Some(61234)
        );
        assert_eq!(
            upstream_data_port("227 Entering Passive Mode (127,0,0,1,239,50)\r\n"),
            Some(239 * 256 + 50)
        );
        assert_eq!(upstream_data_port("425 No data connection\r\n"), None);
        assert_eq!(
            upstream_data_port("227 Entering Passive Mode (127,0,0,1)\r\n"),
            None
        );
    }

    #[tokio::test]
    async fn passive_ports_come_from_the_range() {
        let l = bind_passive(IpAddr::from([127, 0, 0, 1]), &(47000..=47009)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!((47000..=47009).contains(&port));
        let err = bind_passive(IpAddr::from([127, 0, 0, 1]), &(port..=port)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
