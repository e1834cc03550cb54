//! Floorwire's shared library: what every Floorwire service speaks.
//!
//! ```text
//! sip/            RFC 3261 on top of rsipstack::sip messages
//!   framing       Content-Length framing for datagrams and streams (§18.3)
//!   ingress       parse + validate one datagram: request, response, or a reply/drop verdict
//!   uas           request checks an endpoint owns (§8.2: 405/501, 416, 415, 420, 406)
//!   transaction   sans-IO transaction layer (§17, RFC 6026), timers A–M
//!   dialog        dialog state and in-dialog requests (§12)
//!   auth          digest authentication, both sides (RFC 7616 / RFC 2617)
//!   udp           the thin tokio driver: socket ⇄ transaction layer ⇄ transaction user
//! sdp             offer/answer: codec intersection, media anchoring, hold (RFC 3264)
//! rtp/            port pool, relay with latching and per-stream counters, G.711, tones
//! service/        config, tracing, admin HTTP (/metrics, /healthz), shutdown, TLS provider
//! ```
//!
//! Protocol code takes bytes and `now` in and hands datagrams, events and timer deadlines
//! out; only `sip::udp`, `rtp::relay`, `rtp::pool` and `service` touch sockets.

pub mod error;
pub mod rtp;
pub mod sdp;
pub mod service;
pub mod sip;
pub mod util;

pub use error::Error;
