//! RTP media: port pool, relay between two legs, per-stream counters, G.711, tones.
//!
//! Packets are read with `rtp-rs` (zero-copy); the relay itself only looks at the
//! header for counters and latching, and forwards payloads untouched.

pub mod anchor;
pub mod g711;
pub mod pool;
pub mod relay;
pub mod stats;
pub mod tone;

pub use anchor::{MediaAnchor, MediaMapping, RecorderStreams, RelayAnchor, RelayTotals};
pub use pool::PortPool;
pub use relay::{Relay, RelayHandle, Transcode};
pub use stats::StreamStats;
