//! SBC shim: trunk edge with E.164 normalisation and active/standby (issue 5 builds these; this crate serves the admin port so far).

pub mod normalise;
pub mod policy;

use std::net::SocketAddr;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use floorwire::service::{AdminSection, admin::Health, run_admin};

/// The SBC's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule file was refused whole; names the file, the rule and the field.
    #[error("rules {file}: {detail}")]
    Rules { file: String, detail: String },
    /// An error from the shared library (config, sockets…).
    #[error(transparent)]
    Floorwire(#[from] floorwire::Error),
}

/// The configuration embedded in the binary (every key documented in docs/configuration.md).
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// Environment-variable prefix for overrides (`PREFIX__SECTION__KEY`).
pub const ENV_PREFIX: &str = "SBC_SHIM";

/// `sbc-shim serve` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminSection,
}

/// Runs the service until `shutdown` is cancelled; `ready` gets the admin address
/// once the service is up.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), floorwire::Error> {
    let registry = prometheus::Registry::new();
    run_admin(
        "sbc-shim",
        &config.admin,
        registry,
        Health::default(),
        shutdown,
        ready,
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_and_shipped_configs_load() {
        let c: super::Config = floorwire::service::config::parse(
            super::DEFAULT_CONFIG,
            std::path::Path::new("default.toml"),
            "NONE",
            &[],
        )
        .expect("embedded config");
        assert_eq!(c.admin.listen.port(), 9200);
    }
}
