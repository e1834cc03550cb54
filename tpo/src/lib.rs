//! Turret Proxy Openline: SIP registrar (digest against the TSS-minted credentials)
//! and OPTIONS keepalives, and a B2BUA for the turrets' calls (shared lines rung
//! everywhere at once, private wires, intercoms, active/active peers), with its
//! configuration polled from the TSS and a record of every call sent back to it.
//!
//! Layout: [`registrar`] (bindings, sans-IO), [`core`] (the SIP transaction user),
//! [`router`] (where each call goes, and its record), [`peers`] (which peer TPOs
//! answer), [`tss_client`] (configuration from the TSS API), [`call_records`] (the
//! spool and poster that get every call record to the TSS), [`metrics`].

pub mod call_records;
pub mod core;
pub mod error;
pub mod metrics;
pub mod peers;
pub mod registrar;
pub mod router;
pub mod tss_client;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use floorwire::service::{AdminSection, RuntimeSection, admin::Health};
use floorwire::sip::auth::{Algorithm, DigestServer};
use floorwire::sip::metrics::SipMetrics;
use floorwire::sip::udp::{UdpConfig, run_udp};

pub use error::{Error, Result};

/// The configuration embedded in the binary (every key documented in docs/configuration.md).
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// Environment-variable prefix for overrides (`PREFIX__SECTION__KEY`).
pub const ENV_PREFIX: &str = "TPO";

/// `tpo serve` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: AdminSection,
    pub sip: SipSection,
    pub registrar: registrar::ExpiryPolicy,
    pub tss: tss_client::TssSection,
    pub call_records: call_records::CallRecordsSection,
    pub media: MediaSection,
    pub sbc: SbcSection,
    pub calls: CallsSection,
    pub peers: peers::PeersSection,
    pub recording: RecordingSection,
    pub runtime: RuntimeSection,
}

/// `[recording]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// Recorders (`IP:port`) for calls whose user's site names none.
    pub default_recorders: Vec<String>,
    /// Each recording session is asked (in-dialog OPTIONS) this often whether its
    /// recorder still has it; 0: never.
    pub keepalive_secs: u64,
}

/// `[media]`: the RTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// Address announced in SDP; empty: the SIP listen address.
    pub ip: String,
    pub first_port: u16,
    pub last_port: u16,
    /// An answered call with no RTP or RTCP either way for this long (and not on hold)
    /// is hung up on both legs; 0: never.
    pub rtp_timeout_secs: u64,
}

/// `[sbc]`: the trunk edge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbcSection {
    /// Where external calls go, and whose calls are inbound; empty: no SBC.
    pub address: String,
}

/// `[calls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsSection {
    /// Calls (ringing and established) at once; past it new INVITEs get 503.
    pub max_calls: usize,
    /// New calls admitted per second; past it new INVITEs get 503 + Retry-After: 1.
    /// 0: no limit.
    pub max_calls_per_second: u32,
}

/// `[sip]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    pub listen: SocketAddr,
    pub realm: String,
    pub nonce_lifetime_secs: u64,
    /// Kernel receive buffer for the SIP socket, bytes; 0: the system default.
    pub receive_buffer_bytes: usize,
}

/// Where a running TPO listens.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub admin: SocketAddr,
    pub sip: SocketAddr,
}

fn validate(config: &Config) -> Result<()> {
    let r = &config.registrar;
    if r.min_expires == 0 || r.min_expires > r.default_expires || r.default_expires > r.max_expires
    {
        return Err(Error::Config(
            "registrar: need 0 < min_expires <= default_expires <= max_expires".into(),
        ));
    }
    if config.sip.realm.is_empty() {
        return Err(Error::Config("sip.realm: must not be empty".into()));
    }
    if config.tss.token.is_empty() {
        return Err(Error::Config(
            "tss.token: set one of the TSS's [api] tpo_tokens".into(),
        ));
    }
    if config.media.first_port == 0 || config.media.first_port >= config.media.last_port {
        return Err(Error::Config(
            "media.first_port < media.last_port, both non-zero".into(),
        ));
    }
    if !config.media.ip.is_empty() && config.media.ip.parse::<std::net::IpAddr>().is_err() {
        return Err(Error::Config(format!(
            "media.ip {:?}: not an IP address",
            config.media.ip
        )));
    }
    if !config.sbc.address.is_empty() && config.sbc.address.parse::<SocketAddr>().is_err() {
        return Err(Error::Config(format!(
            "sbc.address {:?}: not IP:port",
            config.sbc.address
        )));
    }
    if config.peers.probe_interval_ms == 0
        || config.peers.dead_after_ms <= config.peers.probe_interval_ms
    {
        return Err(Error::Config(
            "peers: need 0 < probe_interval_ms < dead_after_ms".into(),
        ));
    }
    if !config.peers.addresses.is_empty() && config.sip.listen.ip().is_unspecified() {
        return Err(Error::Config(format!(
            "sip.listen {}: with peers, listen on the address the peers list (not a wildcard)",
            config.sip.listen
        )));
    }
    if config.call_records.tpo.len() > 64 {
        return Err(Error::Config(
            "call_records.tpo: at most 64 characters (the TSS's limit)".into(),
        ));
    }
    if !config.call_records.tpo.is_empty()
        && !config
            .call_records
            .tpo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::Config(format!(
            "call_records.tpo {:?}: only A-Z a-z 0-9 - _ .",
            config.call_records.tpo
        )));
    }
    if config.tss.poll_interval_ms == 0 {
        return Err(Error::Config(
            "tss.poll_interval_ms: must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Runs the service until `shutdown` is cancelled; `ready` gets the bound addresses.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(Bound),
) -> Result<()> {
    validate(&config)?;
    let client = tss_client::TssClient::new(&config.tss)?;
    let registry = prometheus::Registry::new();
    let metrics = metrics::TpoMetrics::register(&registry)
        .map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let sip_metrics =
        SipMetrics::register(&registry).map_err(|e| Error::Config(format!("metrics: {e}")))?;
    let shared: tss_client::Shared = Arc::new(RwLock::new(None));
    let revision_gauge = metrics.config_revision.clone();
    let poller = tokio::spawn(tss_client::poll(
        client,
        Duration::from_millis(config.tss.poll_interval_ms),
        shared.clone(),
        shutdown.clone(),
        move |c| revision_gauge.set(c.revision),
    ));
    let spool = call_records::Spool::open(&config.call_records)?;
    let delivery_metrics = metrics.clone();
    let poster = tokio::spawn(call_records::post_spooled(
        spool.clone(),
        tss_client::TssClient::new(&config.tss)?,
        shutdown.clone(),
        move |d| delivery_metrics.call_record(d),
    ));
    let socket = tokio::net::UdpSocket::bind(config.sip.listen)
        .await
        .map_err(|e| Error::Config(format!("sip.listen {}: {e}", config.sip.listen)))?;
    let sip_addr = socket.local_addr()?;
    let health = Health::default();
    let (admin_addr, admin) = floorwire::service::admin::serve(
        config.admin.listen,
        registry,
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let registrar = Arc::new(std::sync::Mutex::new(registrar::Registrar::new(
        config.registrar,
    )));
    let media_ip = if config.media.ip.is_empty() {
        sip_addr.ip()
    } else {
        config
            .media
            .ip
            .parse()
            .map_err(|_| Error::Config("media.ip".into()))?
    };
    let anchor = floorwire::rtp::RelayAnchor::new(
        media_ip,
        config.media.first_port,
        config.media.last_port,
        shutdown.clone(),
    )?;
    metrics
        .rtp_port_pairs_free
        .set(anchor.ports_available() as i64);
    let peers = peers::PeerSet::from_section(&config.peers, sip_addr)?;
    let peer_gauge = metrics.peer_up.clone();
    let prober = tokio::spawn(peers::probe(
        peers.clone(),
        sip_addr.ip(),
        Duration::from_millis(config.peers.probe_interval_ms),
        shutdown.clone(),
        move |peer, up| {
            peer_gauge
                .with_label_values(&[&peer.to_string()])
                .set(i64::from(up));
        },
    ));
    let tpo_name = if config.call_records.tpo.is_empty() {
        format!("tpo-{sip_addr}").replace([':', '[', ']'], "-")
    } else {
        config.call_records.tpo.clone()
    };
    let records = call_records::spool_writer(spool.clone(), metrics.clone());
    let mut default_recorders = Vec::new();
    for (i, text) in config.recording.default_recorders.iter().enumerate() {
        default_recorders.push(text.parse().map_err(|_| {
            Error::Config(format!(
                "recording.default_recorders[{i}] {text:?}: not IP:port"
            ))
        })?);
    }
    let mut router = router::TpoRouter::new(
        registrar.clone(),
        shared.clone(),
        config.sbc.address.parse().ok(),
        sip_addr,
        peers,
        tpo_name,
        Some(records),
    );
    router.default_recorders = default_recorders;
    let mut b2bua_config = floorwire::sip::b2bua::B2buaConfig::new(sip_addr);
    b2bua_config.contact_user = "tpo".into();
    b2bua_config.max_calls = config.calls.max_calls;
    b2bua_config.max_calls_per_second =
        (config.calls.max_calls_per_second > 0).then_some(config.calls.max_calls_per_second);
    b2bua_config.media_timeout = (config.media.rtp_timeout_secs > 0)
        .then(|| Duration::from_secs(config.media.rtp_timeout_secs));
    b2bua_config.recording_keepalive = (config.recording.keepalive_secs > 0)
        .then(|| Duration::from_secs(config.recording.keepalive_secs));
    let calls = floorwire::sip::b2bua::B2bua::new(b2bua_config, router, anchor);
    let core = core::TpoCore::new(
        registrar,
        calls,
        DigestServer::new(
            config.sip.realm.clone(),
            Algorithm::Md5,
            config.sip.nonce_lifetime_secs,
        ),
        shared,
        metrics,
        sip_addr,
    );
    let udp = UdpConfig {
        metrics: Some(sip_metrics),
        receive_buffer: config.sip.receive_buffer_bytes,
        ..UdpConfig::default()
    };
    let sip = tokio::spawn(run_udp(socket, udp, core, shutdown.clone()));
    tracing::info!(%sip_addr, %admin_addr, "tpo listening");
    health.set_ready(true);
    ready(Bound {
        admin: admin_addr,
        sip: sip_addr,
    });
    admin.await?;
    let _ = poller.await;
    let _ = prober.await;
    let _ = poster.await;
    match sip.await {
        Ok(result) => {
            result?;
        }
        Err(e) => return Err(Error::Config(format!("SIP task: {e}"))),
    }
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
        assert_eq!(c.admin.listen.port(), 9100);
        assert_eq!(c.sip.listen.port(), 5060);
        assert_eq!(c.runtime.worker_threads, 1);
        let e = super::validate(&c).unwrap_err().to_string();
        assert!(
            e.contains("tss.token"),
            "the embedded config needs a token: {e}"
        );
    }
}
