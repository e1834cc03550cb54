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

/// `[runtime]`: the tokio runtime a service runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Worker threads; 0: one per core (tokio's default).
    pub worker_threads: usize,
}

impl RuntimeSection {
    /// A multi-threaded runtime with the configured workers.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if self.worker_threads > 0 {
            builder.worker_threads(self.worker_threads);
        }
        builder.enable_all().build()
    }
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

/// `SERVICE serve` arguments, shared by every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; the embedded defaults when absent. Environment variables
    /// `PREFIX__SECTION__KEY` override either (docs/configuration.md).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// What every `SERVICE serve` does after parsing its arguments: install the crypto
/// provider and tracing, load the config (embedded defaults, file, environment), run
/// the service on a tokio runtime until Ctrl-C/SIGTERM, and print one line
/// `SERVICE ready: admin=ADDR` on stdout once it is up.
pub fn serve_main<C, F, Fut>(
    service: &'static str,
    args: &ServeArgs,
    default_config: &str,
    env_prefix: &str,
    run: F,
) -> Result<(), crate::Error>
where
    C: serde::de::DeserializeOwned,
    F: FnOnce(C, CancellationToken, Box<dyn FnOnce(SocketAddr) + Send>) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::Error>>,
{
    tls::install_crypto_provider();
    telemetry::init("info", false);
    let config: C = config::load(args.config.as_deref(), default_config, env_prefix)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        shutdown::cancel_on_signal(shutdown.clone());
        let ready = Box::new(move |admin: SocketAddr| println!("{service} ready: admin={admin}"));
        run(config, shutdown, ready).await
    })
}
