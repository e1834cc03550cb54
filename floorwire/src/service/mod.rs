//! What every Floorwire binary needs around its protocol code: TOML config with env
//! overrides, tracing, the admin HTTP port (`/metrics`, `/healthz`), graceful
//! shutdown, and one rustls crypto provider.

pub mod admin;
pub mod config;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

use std::net::SocketAddr;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// `[admin]` section shared by every service's config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin HTTP port (`/metrics`, `/healthz`).
    pub listen: SocketAddr,
}

/// Serves the admin port for `service` until `shutdown`, marking it healthy once
/// bound and telling `ready` the bound address.
pub async fn run_admin(
    service: &str,
    admin: &AdminSection,
    registry: prometheus::Registry,
    health: admin::Health,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), crate::Error> {
    let (addr, serving) = admin::serve(admin.listen, registry, health.clone(), shutdown).await?;
    tracing::info!(service, %addr, "admin listening");
    health.set_ready(true);
    ready(addr);
    serving.await?;
    Ok(())
}
