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
    /// Passive data ports, on the listen address.
    pub passive_port_first: u16,
    pub passive_port_last: u16,
    /// PEM certificate chain and key; both empty: a self-signed certificate for the
    /// listen address is made at start (the lab).
    pub cert_file: String,
    pub key_file: String,
    /// Where the software packages' files are.
    pub software_dir: String,
    pub idle_timeout_secs: u64,
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

/// Binds passive data ports on the public address (libunftp would use the loopback
/// address the gate reaches it on).
#[derive(Debug)]
struct PublicBinder {
    ip: IpAddr,
}

#[async_trait::async_trait]
impl libunftp::options::Binder for PublicBinder {
    async fn bind(
        &mut self,
        _local: IpAddr,
        ports: RangeInclusive<u16>,
    ) -> std::io::Result<tokio::net::TcpSocket> {
        let span = u32::from(*ports.end()) - u32::from(*ports.start()) + 1;
        let offset = rand::random::<u32>() % span;
        for i in 0..span {
            let port = u16::try_from(u32::from(*ports.start()) + (offset + i) % span)
                .unwrap_or(*ports.start());
            let socket = if self.ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            // Ports of finished transfers sit in TIME_WAIT; they are free to listen on.
            socket.set_reuseaddr(true)?;
            if socket.bind(SocketAddr::new(self.ip, port)).is_ok() {
                return Ok(socket);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free passive port",
        ))
    }
}

/// The certificate and key files, made self-signed for `listen` when not configured.
fn certificate(config: &FtpesSection) -> Result<(PathBuf, PathBuf)> {
    match (config.cert_file.is_empty(), config.key_file.is_empty()) {
        (false, false) => Ok((
            config.cert_file.clone().into(),
            config.key_file.clone().into(),
        )),
        (true, true) => {
            let names = vec![config.listen.ip().to_string(), "localhost".to_owned()];
            let key = rcgen::KeyPair::generate()
                .map_err(|e| Error::Config(format!("ftpes certificate: {e}")))?;
            let cert = rcgen::CertificateParams::new(names)
                .and_then(|p| p.self_signed(&key))
                .map_err(|e| Error::Config(format!("ftpes certificate: {e}")))?;
            let dir = std::env::temp_dir().join(format!("floorwire-tss-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let (cert_path, key_path) = (dir.join("ftpes-cert.pem"), dir.join("ftpes-key.pem"));
            std::fs::write(&cert_path, cert.pem())?;
            std::fs::write(&key_path, key.serialize_pem())?;
            tracing::warn!(cert = %cert_path.display(), "ftpes: no certificate configured; made a self-signed one");
            Ok((cert_path, key_path))
        }
        _ => Err(Error::Config(
            "ftpes.cert_file and ftpes.key_file: set both or neither".into(),
        )),
    }
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| Error::Config(format!("ftpes {}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("ftpes.cert_file: {e}")))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| Error::Config(format!("ftpes.key_file: {e}")))?
        .ok_or_else(|| Error::Config("ftpes.key_file: no private key in it".into()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("ftpes certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
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
    realm: String,
    shutdown: CancellationToken,
) -> Result<(Ftpes, impl std::future::Future<Output = ()>)> {
    if config.passive_port_first == 0 || config.passive_port_first > config.passive_port_last {
        return Err(Error::Config(
            "ftpes.passive_port_first..passive_port_last: an increasing range of non-zero ports"
                .into(),
        ));
    }
    let (cert, key) = certificate(config)?;
    let acceptor = tls_acceptor(&cert, &key)?;
    let tokens = Tokens::default();
    let storage = ProfileStorage {
        store,
        software_dir: PathBuf::from(&config.software_dir),
        realm,
    };
    let public_ip = config.listen.ip();
    let mut builder = libunftp::ServerBuilder::with_authenticator(
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
    .passive_ports(config.passive_port_first..=config.passive_port_last)
    .binder(PublicBinder { ip: public_ip })
    .idle_session_timeout(config.idle_timeout_secs)
    .metrics();
    if let IpAddr::V4(v4) = public_ip {
        builder = builder.passive_host(libunftp::options::PassiveHost::Ip(v4));
    }
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
        tokens,
        upstream: inner_addr,
        idle: Duration::from_secs(config.idle_timeout_secs.max(1)),
    };
    let gate = Arc::new(gate);
    tracing::info!(%addr, "ftpes listening");
    let running = async move {
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let gate = gate.clone();
                        tracker.spawn(async move {
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
    tokens: Tokens,
    upstream: SocketAddr,
    idle: Duration,
}

/// What came first while the gate waited for a command.
enum Waiting {
    Command,
    Unsolicited,
    Closed,
}

/// How a phase of a session ended.
enum PhaseEnd {
    StartTls,
    Closed,
}

impl Gate {
    async fn session(&self, client: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let mut upstream = BufStream::new(TcpStream::connect(self.upstream).await?);
        let mut client = BufReader::new(client);
        // The file server's greeting, relayed.
        relay_reply(&mut upstream, &mut client).await?;
        let mut policy = ControlPolicy::default();
        match self
            .phase(&mut client, &mut upstream, &mut policy, peer)
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
        self.phase(&mut client, &mut upstream, &mut policy, peer)
            .await?;
        Ok(())
    }

    async fn phase<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut BufReader<S>,
        upstream: &mut BufStream<TcpStream>,
        policy: &mut ControlPolicy,
        peer: SocketAddr,
    ) -> std::io::Result<PhaseEnd> {
        loop {
            // While waiting for the next command, relay what the file server says by
            // itself (a 421 on idle, a late 425), so replies never fall out of step.
            let event = tokio::select! {
                r = client.fill_buf() => r.map(|b| if b.is_empty() { Waiting::Closed } else { Waiting::Command }),
                r = upstream.fill_buf() => r.map(|b| if b.is_empty() { Waiting::Closed } else { Waiting::Unsolicited }),
                _ = tokio::time::sleep(self.idle) => Ok(Waiting::Closed),
            }?;
            match event {
                Waiting::Closed => return Ok(PhaseEnd::Closed),
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
                    upstream.write_all(line.as_bytes()).await?;
                    upstream.flush().await?;
                    let code = relay_reply(upstream, client).await?;
                    policy.on_reply(code);
                    if gate::split(&line).0 == "QUIT" {
                        return Ok(PhaseEnd::Closed);
                    }
                }
                Action::Login { user, password } => {
                    match self.auth.login(&user, &password, peer.ip()).await {
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
                            tracing::info!(user = %identity.name, %peer, "ftpes login");
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

/// Reads one whole reply (through preliminary 1xx replies to the final one) into
/// `out`; returns the final code.
async fn read_reply(
    upstream: &mut BufStream<TcpStream>,
    out: &mut Vec<u8>,
) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if upstream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file server closed",
            ));
        }
        out.extend_from_slice(line.as_bytes());
        if let Some(code) = gate::final_code(&line)
            && !(100..200).contains(&code)
        {
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
        let mut line = String::new();
        if upstream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file server closed",
            ));
        }
        client.get_mut().write_all(line.as_bytes()).await?;
        client.get_mut().flush().await?;
        if let Some(code) = gate::final_code(&line)
            && !(100..200).contains(&code)
        {
            return Ok(code);
        }
    }
}
