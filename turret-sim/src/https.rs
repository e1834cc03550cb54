//! A small HTTPS client for the TSS API and the stand-ins' HTTP ports: one request
//! per connection, the server checked against a given CA file (the lab CA), bounded
//! in time and size.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::Error;

/// Most bytes of an answer read.
const MAX_BODY: usize = 64 << 20;

/// Where requests go, and how the server is trusted.
#[derive(Clone)]
pub struct Client {
    server: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    basic: Option<String>,
    /// Bound on one request, answer included.
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Http(format!("answer is not JSON ({e})")))
    }
}

impl Client {
    /// HTTPS to `server`, whose certificate must chain to a CA in `ca_file` and name
    /// its IP address.
    pub fn https(server: SocketAddr, ca_file: &Path) -> Result<Self, Error> {
        let pem = std::fs::read(ca_file)
            .map_err(|e| Error::Http(format!("CA file {}: {e}", ca_file.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| Error::Http(format!("CA file {}: {e}", ca_file.display())))?;
            roots
                .add(cert)
                .map_err(|e| Error::Http(format!("CA file {}: {e}", ca_file.display())))?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            server,
            tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
            basic: None,
            timeout: Duration::from_secs(10),
        })
    }

    /// Plain HTTP to `server` (the stand-ins' own ports, on loopback).
    pub fn http(server: SocketAddr) -> Self {
        Self {
            server,
            tls: None,
            basic: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Bounds each request by `timeout` instead of 10 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends HTTP Basic credentials with every request.
    pub fn with_basic(mut self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.basic = Some(format!("Basic {token}"));
        self
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer, Error> {
        self.request(hyper::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body (or none).
    pub async fn post(
        &self,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Answer, Error> {
        self.request(hyper::Method::POST, path, json).await
    }

    /// One request, within the client's bound (10 s unless set) in all.
    pub async fn request(
        &self,
        method: hyper::Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Answer, Error> {
        let what = format!("{method} {path} at {}", self.server);
        tokio::time::timeout(self.timeout, self.exchange(method, path, json))
            .await
            .map_err(|_| {
                Error::Http(format!(
                    "{what}: no answer within {} s",
                    self.timeout.as_secs()
                ))
            })?
            .map_err(|e| Error::Http(format!("{what}: {e}")))
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect(self.server)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.server.ip().to_string());
        if let Some(basic) = &self.basic {
            request = request.header(hyper::header::AUTHORIZATION, basic);
        }
        let body = match json {
            Some(v) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| e.to_string())?)
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::from(self.server.ip());
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(hyper_util::rt::TokioIo::new(stream), request).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), request).await?,
        };
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

async fn send<IO>(
    io: IO,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))
}
