//! The TSS's one error type. [`Error::status`] maps each kind to the HTTP status the
//! API answers; internals (SQL text, paths) never reach a client.

/// Everything that can go wrong in the TSS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input refused; `field` is the path of the offending field (`appearances[2].line`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The named thing is not in the store.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The change conflicts with what is stored (e.g. deleting a line still on a turret).
    #[error("conflict: {0}")]
    Conflict(String),
    /// No credentials, wrong credentials, or a directory that refused the bind.
    #[error("authentication failed")]
    Unauthenticated,
    /// Authenticated, but the role does not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Too many failed logins for this user from this source.
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
    /// No directory server could answer a login (all unreachable or failing).
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(String),
    /// The database refused or failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A URL or setting that cannot work, found at start.
    #[error("config: {0}")]
    Config(String),
    /// Service plumbing (admin port, config loading) failed.
    #[error(transparent)]
    Service(#[from] floorwire::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid { .. } => 400,
            Error::NotFound { .. } => 404,
            Error::Conflict(_) => 409,
            Error::Unauthenticated => 401,
            Error::Forbidden(_) => 403,
            Error::Throttled { .. } => 429,
            Error::DirectoryUnavailable(_) => 503,
            _ => 500,
        }
    }
}

/// Convenience alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
