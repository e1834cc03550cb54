//! Prometheus metrics of the SBC (`floorwire_sbc_*`), beside the SIP layer's
//! `floorwire_sip_*`.

use floorwire::sip::b2bua::B2buaStats;
use floorwire::sip::metrics::{CallMetrics, counter, gauge, registered};
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The SBC's counters and gauges.
#[derive(Debug, Clone)]
pub struct SbcMetrics {
    calls: CallMetrics,
    role: IntGauge,
    replicated: IntGauge,
    rules: IntGaugeVec,
    reload_failures: IntCounter,
}

impl SbcMetrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rules = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "floorwire_sbc_rules_info",
                    "normalisation rules in force (1 for the loaded version)",
                ),
                &["version"],
            )?,
        )?;
        Ok(Self {
            calls: CallMetrics::register(registry, "floorwire_sbc")?,
            role: gauge(
                registry,
                "floorwire_sbc_ha_active",
                "1 while this node serves, 0 while standby",
            )?,
            replicated: gauge(
                registry,
                "floorwire_sbc_ha_replicated_calls",
                "established calls in the standby's copy of the table",
            )?,
            rules,
            reload_failures: counter(
                registry,
                "floorwire_sbc_rules_reload_failures_total",
                "rule reloads refused (the rules in force stayed)",
            )?,
        })
    }

    /// Brings the call counters up to `stats`.
    pub fn update(&self, stats: &B2buaStats) {
        self.calls.update(stats);
    }

    /// Active (serving) or standby.
    pub fn set_role(&self, active: bool) {
        self.role.set(i64::from(active));
    }

    /// Size of the standby's replicated table.
    pub fn set_replicated(&self, calls: usize) {
        self.replicated.set(calls as i64);
    }

    /// A rule set was loaded.
    pub fn rules_loaded(&self, version: String) {
        self.rules.reset();
        self.rules.with_label_values(&[version.as_str()]).set(1);
    }

    /// A rule reload was refused.
    pub fn rules_reload_failed(&self) {
        self.reload_failures.inc();
    }
}
