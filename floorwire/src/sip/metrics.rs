//! Prometheus counters for a SIP endpoint, fed from the transaction layer's
//! [`LayerStats`] by the driver.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::transaction::LayerStats;

/// The counters operators watch on every SIP endpoint (`floorwire_sip_*`).
#[derive(Debug, Clone)]
pub struct SipMetrics {
    requests: IntCounter,
    responses: IntCounter,
    retransmissions_sent: IntCounter,
    retransmissions_absorbed: IntCounter,
    rejected_malformed: IntCounter,
    rejected_overload: IntCounter,
    timeouts: IntCounter,
    transactions: IntGauge,
    ingress_queued: IntGauge,
    ingress_delay: Histogram,
    last: LayerStats,
}

/// Bounds of `floorwire_sip_ingress_delay_seconds`: from a core keeping up (well under
/// a millisecond) to one that makes peers retransmit (T1, 500 ms) and beyond.
const INGRESS_DELAY_BUCKETS: [f64; 11] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// Registers `metric` in `registry`; returns it (a handle on the registered value).
pub fn registered<M>(registry: &Registry, metric: M) -> Result<M, prometheus::Error>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A counter, registered in `registry`.
pub fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> Result<IntCounter, prometheus::Error> {
    registered(registry, IntCounter::new(name, help)?)
}

/// A gauge, registered in `registry`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    registered(registry, IntGauge::new(name, help)?)
}

impl SipMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let transactions = gauge(
            registry,
            "floorwire_sip_transactions",
            "SIP transactions alive",
        )?;
        let ingress_queued = gauge(
            registry,
            "floorwire_sip_ingress_queued",
            "SIP messages received and parsed, waiting for the SIP core",
        )?;
        let ingress_delay = registered(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "floorwire_sip_ingress_delay_seconds",
                    "time a SIP message waited from its receipt to the SIP core taking it",
                )
                .buckets(INGRESS_DELAY_BUCKETS.to_vec()),
            )?,
        )?;
        Ok(Self {
            requests: counter(
                registry,
                "floorwire_sip_requests_received_total",
                "SIP requests received and parsed",
            )?,
            responses: counter(
                registry,
                "floorwire_sip_responses_received_total",
                "SIP responses received and parsed",
            )?,
            retransmissions_sent: counter(
                registry,
                "floorwire_sip_retransmissions_sent_total",
                "SIP messages retransmitted by timers or on request",
            )?,
            retransmissions_absorbed: counter(
                registry,
                "floorwire_sip_retransmissions_absorbed_total",
                "retransmitted SIP requests absorbed by a transaction",
            )?,
            rejected_malformed: counter(
                registry,
                "floorwire_sip_rejected_malformed_total",
                "SIP messages refused as malformed (answered 4xx/5xx or dropped)",
            )?,
            rejected_overload: counter(
                registry,
                "floorwire_sip_rejected_overload_total",
                "SIP messages shed because of load: requests answered 503, responses and ACKs past the reader's room dropped",
            )?,
            timeouts: counter(
                registry,
                "floorwire_sip_transaction_timeouts_total",
                "SIP transactions ended by timer B, F, H or an unacknowledged 2xx",
            )?,
            transactions,
            ingress_queued,
            ingress_delay,
            last: LayerStats::default(),
        })
    }

    /// Brings the counters up to `stats` (monotonic counters from one layer).
    pub fn update(&mut self, stats: &LayerStats, transactions: usize) {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        self.requests
            .inc_by(d(stats.requests_received, self.last.requests_received));
        self.responses
            .inc_by(d(stats.responses_received, self.last.responses_received));
        self.retransmissions_sent.inc_by(d(
            stats.retransmissions_sent,
            self.last.retransmissions_sent,
        ));
        self.retransmissions_absorbed.inc_by(d(
            stats.retransmissions_absorbed,
            self.last.retransmissions_absorbed,
        ));
        self.rejected_malformed
            .inc_by(d(stats.rejected_malformed, self.last.rejected_malformed));
        self.rejected_overload
            .inc_by(d(stats.rejected_overload, self.last.rejected_overload));
        self.timeouts.inc_by(d(stats.timeouts, self.last.timeouts));
        self.transactions.set(transactions as i64);
        self.last = *stats;
    }

    /// Counts `messages` more waiting for the core (the socket reader queued them).
    pub fn ingress_queued(&self, messages: usize) {
        self.ingress_queued
            .add(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// Counts `messages` the core took off the queue, each after waiting `waited` since
    /// its receipt.
    pub fn ingress_taken(&self, messages: usize, waited: std::time::Duration) {
        self.ingress_queued
            .sub(i64::try_from(messages).unwrap_or(i64::MAX));
        let seconds = waited.as_secs_f64();
        for _ in 0..messages {
            self.ingress_delay.observe(seconds);
        }
    }

    /// Counts a message the socket reader refused as malformed.
    pub fn malformed(&self) {
        self.rejected_malformed.inc();
    }

    /// Counts a message the socket reader shed before it reached the layer.
    pub fn shed(&self) {
        self.rejected_overload.inc();
    }
}

/// A B2BUA's call counters (`PREFIX_calls_*`), brought up to date from its
/// [`B2buaStats`](super::b2bua::B2buaStats) after each event.
#[derive(Debug, Clone)]
pub struct CallMetrics {
    attempted: IntCounter,
    answered: IntCounter,
    refused: IntCounter,
    unanswered: IntCounter,
    ended: IntCounter,
    restored: IntCounter,
    recordings_lost: IntCounter,
    active: IntGauge,
    state_entries: IntGauge,
    last: std::sync::Arc<std::sync::Mutex<super::b2bua::B2buaStats>>,
}

impl CallMetrics {
    /// Registers `PREFIX_calls_*` in `registry` (`prefix` such as `floorwire_tpo`).
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, prometheus::Error> {
        let c = |name: &str, help: &str| counter(registry, &format!("{prefix}_calls_{name}"), help);
        let active = gauge(
            registry,
            &format!("{prefix}_calls_active"),
            "calls up (ringing or established)",
        )?;
        let state_entries = gauge(
            registry,
            &format!("{prefix}_calls_state_entries"),
            "entries in the B2BUA's per-call tables (calls, legs, pending transactions, recordings); near zero when idle",
        )?;
        Ok(Self {
            attempted: c("attempted_total", "INVITEs that opened a call")?,
            answered: c("answered_total", "calls answered by the far side")?,
            refused: c(
                "refused_total",
                "calls refused (routing, policy, load) before leaving on leg B",
            )?,
            unanswered: c(
                "unanswered_total",
                "calls that ended without an answer (busy, cancelled, timed out)",
            )?,
            ended: c("ended_total", "answered calls that ended")?,
            restored: c(
                "restored_total",
                "established calls taken over from a replicated table",
            )?,
            recordings_lost: c(
                "recordings_lost_total",
                "confirmed recordings their recorder lost during the call (no answer to the keepalive OPTIONS, or 481)",
            )?,
            active,
            state_entries,
            last: std::sync::Arc::default(),
        })
    }

    /// Brings the counters up to `stats`.
    pub fn update(&self, stats: &super::b2bua::B2buaStats) {
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
            (
                &self.recordings_lost,
                stats.recordings_lost,
                last.recordings_lost,
            ),
        ];
        for (counter, now, before) in pairs {
            counter.inc_by(now.saturating_sub(before));
        }
        self.active.set(stats.calls_active as i64);
        self.state_entries.set(stats.state_entries as i64);
        *last = *stats;
    }
}
