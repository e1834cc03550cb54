//! SBC shim: the trunk edge between the TPOs and the carrier. A B2BUA (the shared
//! [`floorwire::sip::b2bua`] core) whose router normalises numbers by rule tables
//! ([`normalise`]) and applies trunk policy ([`policy`]); media anchored through its
//! own relay; an active/standby pair replicating the table of established calls
//! ([`ha`]).

pub mod ha;
pub mod metrics;
pub mod normalise;
pub mod policy;
pub mod router;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use floorwire::rtp::RelayAnchor;
use floorwire::service::{AdminSection, admin::Health};
use floorwire::sip::b2bua::{B2bua, B2buaConfig};
use floorwire::sip::transaction::{Event, LayerConfig, TransactionLayer};
use floorwire::sip::udp::{TransactionUser, UdpConfig, run_udp};

use ha::{CallTable, ChangeSink, LinkEnd, LinkTiming};
use metrics::SbcMetrics;
use normalise::RuleSet;
use policy::{Admission, TrunkPolicy};
use router::{SbcRouter, SharedRules, Topology};

/// The SBC's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule file was refused whole; names the file, the rule and the field.
    #[error("rules {file}: {detail}")]
    Rules { file: String, detail: String },
    /// The configuration is inconsistent; names the key.
    #[error("config: {key}: {detail}")]
    Config { key: String, detail: String },
    /// An error from the shared library (config, sockets…).
    #[error(transparent)]
    Floorwire(#[from] floorwire::Error),
}

impl From<Error> for floorwire::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Floorwire(e) => e,
            other => floorwire::Error::Io(std::io::Error::other(other.to_string())),
        }
    }
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
    pub sip: SipSection,
    pub media: MediaSection,
    pub rules: RulesSection,
    pub carrier: CarrierSection,
    pub tpo: TpoSection,
    #[serde(rename = "trunk")]
    pub trunks: Vec<TrunkPolicy>,
    pub ha: HaSection,
}

/// `[sip]`: the service address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    /// Service address (UDP): what TPOs and the carrier send to. In a pair, the
    /// address the active holds and the standby takes over.
    pub listen: SocketAddr,
    /// Calls (ringing and established) at once; past this, 503 + Retry-After.
    pub max_calls: usize,
}

/// `[media]`: the RTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSection {
    /// Address the relay binds and announces; the SIP service address when empty.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    pub first_port: u16,
    pub last_port: u16,
}

/// `[rules]`: number normalisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    /// Rule file (reloaded on SIGHUP); the shipped French preset when empty.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[carrier]`: the trunk to the carrier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierSection {
    /// The carrier's SIP address; calls from its IP are inbound.
    pub address: SocketAddr,
    /// Name of the `[[trunk]]` policy applied to it.
    pub trunk: String,
}

/// `[tpo]`: the TPOs behind the SBC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpoSection {
    /// TPO SIP addresses: inbound calls try them in order; calls from their IPs go
    /// out to the carrier. Calls from any other address are refused (403).
    pub addresses: Vec<SocketAddr>,
    /// Trunk name the normalisation rules see for calls from the TPOs.
    pub trunk: String,
}

/// `[ha]`: active/standby.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// `standalone` (no pair) or `pair`.
    pub mode: HaMode,
    /// This node's name (in logs and the replication hello).
    pub node: String,
    /// This node's replication address (its own address, not the service address).
    pub listen: SocketAddr,
    /// The other node's replication address.
    pub peer: SocketAddr,
    /// Heartbeat interval on the replication link (ms).
    pub heartbeat_ms: u64,
    /// Silence after which the standby counts the active dead (ms).
    pub dead_after_ms: u64,
}

/// Redundancy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaMode {
    Standalone,
    Pair,
}

impl Config {
    /// Checks what serde cannot: names the offending key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, detail: String| {
            Err(Error::Config {
                key: key.into(),
                detail,
            })
        };
        if self.sip.listen.ip().is_unspecified() {
            return bad(
                "sip.listen",
                "must be a concrete address: it goes into Via, Contact and SDP".into(),
            );
        }
        if self.media.ip.is_some_and(|ip| ip.is_unspecified()) {
            return bad(
                "media.ip",
                "must be a concrete address (it goes into SDP)".into(),
            );
        }
        if self.media.first_port >= self.media.last_port {
            return bad(
                "media.first_port",
                format!(
                    "{} is not below media.last_port {}",
                    self.media.first_port, self.media.last_port
                ),
            );
        }
        if !self.trunks.iter().any(|t| t.name == self.carrier.trunk) {
            return bad(
                "carrier.trunk",
                format!("no [[trunk]] named {:?}", self.carrier.trunk),
            );
        }
        if self.tpo.addresses.is_empty() {
            return bad("tpo.addresses", "at least one TPO is needed".into());
        }
        if self.ha.mode == HaMode::Pair && self.ha.dead_after_ms <= self.ha.heartbeat_ms {
            return bad(
                "ha.dead_after_ms",
                "must be longer than ha.heartbeat_ms".into(),
            );
        }
        Ok(())
    }

    fn rules(&self) -> Result<RuleSet, Error> {
        match &self.rules.file {
            Some(path) => RuleSet::load(path),
            None => RuleSet::french(),
        }
    }

    fn timing(&self) -> LinkTiming {
        LinkTiming {
            heartbeat: Duration::from_millis(self.ha.heartbeat_ms.max(1)),
            dead_after: Duration::from_millis(self.ha.dead_after_ms.max(2)),
        }
    }
}

/// The transaction user: the B2BUA core, plus replication and metrics after each event.
struct SbcUser {
    core: B2bua<SbcRouter, RelayAnchor>,
    changes: Option<ChangeSink>,
    metrics: SbcMetrics,
}

impl TransactionUser for SbcUser {
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        self.core.on_event(now, event, layer);
        while let Some(change) = self.core.poll_change() {
            if let Some(sink) = &mut self.changes {
                sink.push(change);
            }
        }
        if let Some(sink) = &mut self.changes
            && sink.wants_table()
        {
            sink.table(self.core.snapshots());
        }
        self.metrics.update(&self.core.stats());
    }
}

/// Runs the service until `shutdown` is cancelled; `ready` gets the admin address
/// once the admin port is up (a standby is ready too: it is doing its job).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), floorwire::Error> {
    config.validate()?;
    let rules: SharedRules = Arc::new(RwLock::new(Arc::new(config.rules()?)));
    let registry = prometheus::Registry::new();
    let metrics = SbcMetrics::register(&registry)
        .map_err(|e| floorwire::Error::Io(std::io::Error::other(e.to_string())))?;
    metrics.rules_loaded(rules_version(&rules));
    let sip_metrics = floorwire::sip::metrics::SipMetrics::register(&registry)
        .map_err(|e| floorwire::Error::Io(std::io::Error::other(e.to_string())))?;
    let health = Health::default();
    let (admin, admin_serving) = floorwire::service::admin::serve(
        config.admin.listen,
        registry,
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%admin, "admin listening");
    spawn_rule_reload(&config, rules.clone(), metrics.clone(), shutdown.clone());
    health.set_ready(true);
    ready(admin);
    let service = async {
        let (socket, table) = match config.ha.mode {
            HaMode::Standalone => (bind_service(config.sip.listen).await?, CallTable::default()),
            HaMode::Pair => match stand_by(&config, &metrics, &shutdown).await {
                Some(taken) => taken,
                None => return Ok(()),
            },
        };
        let served = serve_active(
            &config,
            socket,
            table,
            rules,
            metrics,
            sip_metrics,
            shutdown.clone(),
        )
        .await;
        if served.is_err() {
            // Not serving any more: say so (keepalived moves the address away) and stop.
            health.set_ready(false);
            shutdown.cancel();
        }
        served
    };
    let (service, admin_result) = tokio::join!(service, admin_serving);
    service?;
    admin_result?;
    Ok(())
}

fn rules_version(rules: &SharedRules) -> String {
    match rules.read() {
        Ok(r) => r.version().to_owned(),
        Err(p) => p.into_inner().version().to_owned(),
    }
}

/// SIGHUP reloads the rule file; a file that does not load leaves the rules in force.
fn spawn_rule_reload(
    config: &Config,
    rules: SharedRules,
    metrics: SbcMetrics,
    shutdown: CancellationToken,
) {
    let file = config.rules.file.clone();
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("no SIGHUP handler: rules cannot be reloaded");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hangups.recv() => {}
            }
            let loaded = match &file {
                Some(path) => RuleSet::load(path),
                None => RuleSet::french(),
            };
            match loaded {
                Ok(new) => {
                    let version = new.version().to_owned();
                    match rules.write() {
                        Ok(mut r) => *r = Arc::new(new),
                        Err(p) => *p.into_inner() = Arc::new(new),
                    }
                    metrics.rules_loaded(version.clone());
                    tracing::info!(%version, "rules reloaded: new calls use them");
                }
                Err(e) => {
                    metrics.rules_reload_failed();
                    tracing::error!(error = %e, "rules reload refused: the rules in force stay");
                }
            }
        }
    });
}

async fn bind_service(listen: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("SIP service address {listen}: {e}")))
}

/// The pair's standby loop: follow the active while it lives; when it is gone, take
/// the service address (as soon as the kernel — or keepalived — lets us) with the
/// replicated table. `None` on shutdown.
async fn stand_by(
    config: &Config,
    metrics: &SbcMetrics,
    shutdown: &CancellationToken,
) -> Option<(tokio::net::UdpSocket, CallTable)> {
    let timing = config.timing();
    let mut table = CallTable::default();
    metrics.set_role(false);
    loop {
        let end = ha::follow(config.ha.peer, &mut table, timing, shutdown, |t| {
            metrics.set_replicated(t.len());
        })
        .await;
        match end {
            LinkEnd::Shutdown => return None,
            LinkEnd::Unreachable => {}
            end => tracing::warn!(?end, calls = table.len(), "active peer lost: taking over"),
        }
        match tokio::net::UdpSocket::bind(config.sip.listen).await {
            Ok(socket) => {
                tracing::info!(node = %config.ha.node, service = %config.sip.listen, calls = table.len(), "service address taken: now active");
                return Some((socket, table));
            }
            Err(e) => {
                tracing::debug!(error = %e, "service address still held elsewhere: staying standby");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(timing.heartbeat) => {}
        }
    }
}

async fn serve_active(
    config: &Config,
    socket: tokio::net::UdpSocket,
    table: CallTable,
    rules: SharedRules,
    metrics: SbcMetrics,
    sip_metrics: floorwire::sip::metrics::SipMetrics,
    shutdown: CancellationToken,
) -> Result<(), floorwire::Error> {
    let local = socket.local_addr()?;
    let media_ip = config.media.ip.unwrap_or(local.ip());
    let anchor = RelayAnchor::new(
        media_ip,
        config.media.first_port,
        config.media.last_port,
        shutdown.clone(),
    )?;
    let topology = Topology {
        carrier: config.carrier.address,
        carrier_trunk: config.carrier.trunk.clone(),
        tpos: config.tpo.addresses.clone(),
        tpo_trunk: config.tpo.trunk.clone(),
        local_host: local.ip().to_string(),
    };
    let router = SbcRouter::new(rules, Admission::new(config.trunks.clone()), topology);
    let mut b2bua_config = B2buaConfig::new(local);
    b2bua_config.contact_user = "sbc".into();
    b2bua_config.max_calls = config.sip.max_calls;
    b2bua_config.replicate = true;
    let mut core = B2bua::new(b2bua_config, router, anchor);
    let mut restored = 0usize;
    for snapshot in table.snapshots() {
        let call = snapshot.call;
        match core.restore(snapshot) {
            Ok(()) => restored += 1,
            Err(e) => tracing::error!(call, error = %e, "could not take the call over"),
        }
    }
    let changes = match config.ha.mode {
        HaMode::Standalone => None,
        HaMode::Pair => {
            // The publisher starts from what we carry now.
            let mut initial = CallTable::default();
            initial.apply(ha::Message::Table {
                calls: core.snapshots(),
            });
            let (sink, _) = ha::publish(
                config.ha.listen,
                config.ha.node.clone(),
                initial,
                config.timing(),
                shutdown.clone(),
            )
            .await?;
            Some(sink)
        }
    };
    metrics.set_role(true);
    metrics.update(&core.stats());
    tracing::info!(sip = %local, media = %media_ip, restored, "SBC active");
    let user = SbcUser {
        core,
        changes,
        metrics,
    };
    let udp = UdpConfig {
        layer: LayerConfig::default(),
        metrics: Some(sip_metrics),
        ..UdpConfig::default()
    };
    run_udp(socket, udp, user, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, floorwire::Error> {
        floorwire::service::config::parse(text, std::path::Path::new("test.toml"), "NONE", &[])
    }

    #[test]
    fn embedded_config_loads_and_validates() {
        let c = parse(DEFAULT_CONFIG).expect("embedded config");
        assert_eq!(c.admin.listen.port(), 9200);
        c.validate().expect("embedded config is consistent");
    }

    #[test]
    fn inconsistent_configs_name_the_key() {
        let cases = [
            (
                "listen = \"127.0.0.1:5060\"",
                "listen = \"0.0.0.0:5060\"",
                "sip.listen",
            ),
            ("trunk = \"carrier\"", "trunk = \"nope\"", "carrier.trunk"),
            (
                "first_port = 16000",
                "first_port = 18000",
                "media.first_port",
            ),
        ];
        for (from, to, key) in cases {
            let text = DEFAULT_CONFIG.replacen(from, to, 1);
            assert_ne!(text, DEFAULT_CONFIG, "{from} is in the embedded config");
            let err = parse(&text).expect("parses").validate().expect_err(key);
            assert!(err.to_string().contains(key), "{err} names {key}");
        }
    }
}
