//! Trading System Server: the profile store (SQLite, MariaDB/MySQL or PostgreSQL),
//! the REST API, logins, SIP device credentials and call records.
//!
//! Layout: [`model`] (what is stored, validated whole), [`profile`] (the document a
//! turret downloads, rendered and diffed without I/O), [`store`] (sqlx over the three
//! backends; every change versioned and audited), [`auth`] (login and its throttle),
//! [`api`] (axum routes), [`seed`] (loading a floor from a JSON file). FTPES
//! [`ftpes`] serves turrets their profile and software over FTPES; [`directory`] checks logins by LDAP bind.

pub mod api;
pub mod auth;
pub mod directory;
pub mod error;
pub mod ftpes;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod seed;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use floorwire::service::{AdminSection, admin::Health};

pub use error::{Error, Result};

/// The configuration embedded in the binary (every key documented in docs/configuration.md).
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// Environment-variable prefix for overrides (`PREFIX__SECTION__KEY`).
pub const ENV_PREFIX: &str = "TSS";

/// `tss serve` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminSection,
    pub store: StoreSection,
    pub api: ApiSection,
    pub sip: SipSection,
    pub login: auth::ThrottlePolicy,
    pub ldap: directory::LdapSection,
    pub ftpes: ftpes::FtpesSection,
}

/// `[store]`: where the profile store lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://FILE?mode=rwc`, `mysql://…`/`mariadb://…` or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
}

/// `[api]`: the REST API's listener and the TPOs' tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub listen: SocketAddr,
    /// HTTPS (true) or plain HTTP.
    pub tls: bool,
    /// PEM certificate chain and key; both empty: self-signed at start.
    pub cert_file: String,
    pub key_file: String,
    pub tpo_tokens: Vec<String>,
}

/// `[sip]`: the SIP credentials the TSS mints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    pub realm: String,
}

/// Where a running TSS listens.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub admin: SocketAddr,
    pub api: SocketAddr,
    /// The FTPES control port, when enabled.
    pub ftpes: Option<SocketAddr>,
}

/// Connects to the store and applies its migrations.
pub async fn open_store(config: &StoreSection) -> Result<store::Store> {
    let store = store::Store::connect(&config.url, config.max_connections).await?;
    store.migrate().await?;
    Ok(store)
}

/// Runs the service until `shutdown` is cancelled; `ready` gets the bound addresses
/// once the store is migrated and both ports listen.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(Bound),
) -> Result<()> {
    if config.sip.realm.is_empty() {
        return Err(Error::Config("sip.realm: must not be empty".into()));
    }
    let directory = if config.ldap.enabled() {
        Some(directory::Directory::new(config.ldap.clone())?)
    } else {
        config.ldap.validate()?;
        None
    };
    let store = open_store(&config.store).await?;
    let revision = store.revision().await?;
    tracing::info!(backend = ?store.backend(), revision, "store ready");
    let registry = prometheus::Registry::new();
    let metrics = metrics::TssMetrics::register(&registry)
        .map_err(|e| Error::Config(format!("metrics: {e}")))?;
    metrics.set_revision(store.revision().await?);
    let health = Health::default();
    let (admin_addr, admin) = floorwire::service::admin::serve(
        config.admin.listen,
        registry,
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let authenticator = Arc::new(auth::Authenticator::new(
        store.clone(),
        config.login,
        directory,
    ));
    let (ftpes_addr, ftpes_running) = if config.ftpes.enabled {
        let (ftpes, running) = ftpes::start(
            &config.ftpes,
            store.clone(),
            authenticator.clone(),
            metrics.clone(),
            config.sip.realm.clone(),
            shutdown.clone(),
        )
        .await?;
        (Some(ftpes.addr), Some(running))
    } else {
        (None, None)
    };
    let state = api::ApiState {
        auth: authenticator,
        store: store.clone(),
        tpo_tokens: Arc::new(config.api.tpo_tokens.clone()),
        realm: config.sip.realm.as_str().into(),
        metrics,
    };
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|e| Error::Config(format!("api.listen {}: {e}", config.api.listen)))?;
    let api_addr = listener.local_addr()?;
    let listener = if config.api.tls {
        let (cert, key) = tls::certificate_files(
            "api",
            &config.api.cert_file,
            &config.api.key_file,
            config.api.listen.ip(),
        )?;
        listener::ApiListener::tls(listener, tls::acceptor("api", &cert, &key)?)?
    } else {
        listener::ApiListener::plain(listener)
    };
    let app = api::router(state).into_make_service_with_connect_info::<listener::Peer>();
    let api_shutdown = shutdown.clone();
    let api = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await
    };
    let scheme = if config.api.tls { "https" } else { "http" };
    tracing::info!(api = %format!("{scheme}://{api_addr}"), %admin_addr, "tss listening");
    health.set_ready(true);
    ready(Bound {
        admin: admin_addr,
        api: api_addr,
        ftpes: ftpes_addr,
    });
    let ftpes = async move {
        if let Some(running) = ftpes_running {
            running.await;
        }
    };
    let (a, b, ()) = tokio::join!(admin, api, ftpes);
    store.close().await;
    // Self-signed certificates made at start (tls::certificate_files) go with the process.
    tls::remove_private_dir();
    a?;
    b?;
    Ok(())
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
        assert_eq!(c.admin.listen.port(), 9000);
        assert!(c.store.url.starts_with("sqlite:"));
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tss") && n.ends_with(".toml"))
            {
                let text = std::fs::read_to_string(&path).expect("read");
                floorwire::service::config::parse::<super::Config>(&text, &path, "NONE", &[])
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}
