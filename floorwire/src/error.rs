//! The library's one error type.

use std::path::PathBuf;

/// Everything that can go wrong inside the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A peer sent bytes that are not a SIP message we can act on.
    #[error("malformed SIP message: {0}")]
    MalformedSip(String),
    /// A message would not fit into one UDP datagram (RFC 3261 §18.1.1).
    #[error("message of {size} bytes exceeds the {limit}-byte datagram limit")]
    MessageTooLarge { size: usize, limit: usize },
    /// A peer's SDP could not be parsed or answered.
    #[error("SDP: {0}")]
    Sdp(String),
    /// No codec in the offer is acceptable (answered 488).
    #[error("no acceptable codec in the offer")]
    NoCommonCodec,
    /// A peer's credentials or challenge could not be understood.
    #[error("digest authentication: {0}")]
    Auth(String),
    /// The RTP port range has no free pair left.
    #[error("RTP port range {first}-{last} exhausted")]
    PortsExhausted { first: u16, last: u16 },
    /// Every RTP port pair the process's open-file limit leaves room for is bound and
    /// in a call.
    #[error(
        "RTP legs at the open-file limit: {pairs} port pairs bound and in calls (raise the limit, `ulimit -n` / LimitNOFILE)"
    )]
    DescriptorsExhausted { pairs: usize },
    /// A configuration file was refused; names the file and the offending key.
    #[error("config {file}: {detail}")]
    Config { file: PathBuf, detail: String },
    /// A dialog operation was asked of a dialog in the wrong state.
    #[error("dialog: {0}")]
    Dialog(String),
    /// An operating-system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Convenience alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
