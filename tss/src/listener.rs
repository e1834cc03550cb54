//! The API's listener: plain TCP, or TLS with handshakes done off the accept loop (a
//! slow or silent client never holds up the others). Connections are bounded in
//! number and closed when idle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Bound on a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server.
const READY_QUEUE: usize = 128;

/// A connection silent this long is closed (a slow or stuck client never holds a
/// connection for good; hyper has no timer here).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most API connections at once (handshakes included); beyond it accepting waits.
const MAX_CONNECTIONS: usize = 1024;

/// The transport under an API connection.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection to the API: closed after [`IDLE_TIMEOUT`] without a byte from the
/// client, and holding one of [`MAX_CONNECTIONS`] places until dropped.
#[derive(Debug)]
pub struct ApiStream {
    transport: Transport,
    idle: Pin<Box<tokio::time::Sleep>>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl ApiStream {
    fn new(transport: Transport, place: tokio::sync::OwnedSemaphorePermit) -> Self {
        ApiStream {
            transport,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _place: place,
        }
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.transport {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.idle
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "API client idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The API listener.
#[derive(Debug)]
pub enum ApiListener {
    Plain {
        listener: TcpListener,
        places: std::sync::Arc<tokio::sync::Semaphore>,
    },
    Tls {
        local: SocketAddr,
        ready: tokio::sync::mpsc::Receiver<(ApiStream, SocketAddr)>,
    },
}

impl ApiListener {
    /// Serves plain HTTP on `listener`.
    pub fn plain(listener: TcpListener) -> Self {
        ApiListener::Plain {
            listener,
            places: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// Serves TLS on `listener`: handshakes run in their own tasks.
    pub fn tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(READY_QUEUE);
        let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                // A place first: at the limit, nothing more is accepted (nor handshaken).
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "api accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let stream = ApiStream::new(Transport::Tls(Box::new(tls)), place);
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "api TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "api TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(ApiListener::Tls { local, ready })
    }
}

impl Listener for ApiListener {
    type Io = ApiStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ApiStream, SocketAddr) {
        match self {
            ApiListener::Plain { listener, places } => loop {
                let place = match places.clone().acquire_owned().await {
                    Ok(place) => place,
                    Err(_) => std::future::pending().await,
                };
                match TcpListener::accept(listener).await {
                    Ok((s, peer)) => return (ApiStream::new(Transport::Plain(s), place), peer),
                    Err(e) => {
                        tracing::warn!(error = %e, "api accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            ApiListener::Tls { ready, .. } => match ready.recv().await {
                Some(c) => c,
                // The accept task is gone (cannot happen while we hold the receiver).
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ApiListener::Plain { listener, .. } => listener.local_addr(),
            ApiListener::Tls { local, .. } => Ok(*local),
        }
    }
}

/// The client's address, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, ApiListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_a_talking_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut api = ApiListener::plain(listener);
        let addr = api.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut stream, _) = Listener::accept(&mut api).await;
        let mut buf = [0u8; 16];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 3);
        // 59 s later a byte still arrives in time...
        tokio::time::advance(Duration::from_secs(59)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        // ...but 61 s of silence closes the connection.
        let read = stream.read(&mut buf);
        tokio::pin!(read);
        tokio::time::advance(Duration::from_secs(61)).await;
        let err = read.await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
