//! The TPO's one error type.

/// Everything that can go wrong in the TPO.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work, found at start; names the key.
    #[error("config: {0}")]
    Config(String),
    /// The TSS could not be asked or answered badly.
    #[error("TSS: {0}")]
    Tss(String),
    /// Service plumbing (admin port, config loading, SIP socket) failed.
    #[error(transparent)]
    Service(#[from] floorwire::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Convenience alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
