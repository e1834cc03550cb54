//! Prometheus metrics of the SBC (`floorwire_sbc_*`), beside the SIP layer's
//! `floorwire_sip_*`.

use std::sync::{Arc, Mutex};

use floorwire::sip::b2bua::B2buaStats;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The SBC's counters and gauges.
#[derive(Debug, Clone)]
pub struct SbcMetrics {
    attempted: IntCounter,
    answered: IntCounter,
    refused: IntCounter,
    unanswered: IntCounter,
    ended: IntCounter,
    restored: IntCounter,
    active_calls: IntGauge,
    role: IntGauge,
    replicated: IntGauge,
    rules: IntGaugeVec,
    reload_failures: IntCounter,
    last: Arc<Mutex<B2buaStats>>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

impl SbcMetrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let rules = IntGaugeVec::new(
            Opts::new(
                "floorwire_sbc_rules_info",
                "normalisation rules in force (1 for the loaded version)",
            ),
            &["version"],
        )?;
        registry.register(Box::new(rules.clone()))?;
        Ok(Self {
            attempted: counter(
                registry,
                "floorwire_sbc_calls_attempted_total",
                "INVITEs that opened a call",
            )?,
            answered: counter(
                registry,
                "floorwire_sbc_calls_answered_total",
                "calls answered by the far side",
            )?,
            refused: counter(
                registry,
                "floorwire_sbc_calls_refused_total",
                "calls refused by policy, normalisation or load before leaving the SBC",
            )?,
            unanswered: counter(
                registry,
                "floorwire_sbc_calls_unanswered_total",
                "calls that ended without an answer (busy, cancelled, timed out)",
            )?,
            ended: counter(
                registry,
                "floorwire_sbc_calls_ended_total",
                "answered calls that ended",
            )?,
            restored: counter(
                registry,
                "floorwire_sbc_calls_restored_total",
                "established calls taken over from the replicated table",
            )?,
            active_calls: gauge(
                registry,
                "floorwire_sbc_calls_active",
                "calls up (ringing or established)",
            )?,
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
            last: Arc::new(Mutex::new(B2buaStats::default())),
        })
    }

    /// Brings the call counters up to `stats`.
    pub fn update(&self, stats: &B2buaStats) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let pairs = [
            (&self.attempted, stats.calls_attempted, last.calls_attempted),
            (&self.answered, stats.calls_answered, last.calls_answered),
            (&self.refused, stats.calls_refused, last.calls_refused),
            (
                &self.unanswered,
                stats.calls_unanswered,
                last.calls_unanswered,
            ),
            (&self.ended, stats.calls_ended, last.calls_ended),
            (&self.restored, stats.calls_restored, last.calls_restored),
        ];
        for (counter, now, before) in pairs {
            counter.inc_by(now.saturating_sub(before));
        }
        self.active_calls.set(stats.calls_active as i64);
        *last = *stats;
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
