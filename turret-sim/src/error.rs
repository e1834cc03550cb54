//! The simulator's one error type.

/// What can go wrong in the simulator, the stand-ins and the lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Floorwire(#[from] floorwire::Error),
    /// Starting, checking or stopping the lab.
    #[error("lab: {0}")]
    Lab(String),
    /// A recording session the recorder cannot take (body, metadata, SDP).
    #[error("siprec: {0}")]
    Siprec(String),
    /// A simulated turret.
    #[error("turret: {0}")]
    Turret(String),
    /// A turret's FTPES login and profile download.
    #[error("login: {0}")]
    Login(String),
    /// `turret-sim load`'s options or run.
    #[error("load: {0}")]
    Load(String),
    /// A scenario file or step.
    #[error("scenario: {0}")]
    Scenario(String),
    /// An HTTP exchange with a service.
    #[error("http: {0}")]
    Http(String),
    /// Metrics registration.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
