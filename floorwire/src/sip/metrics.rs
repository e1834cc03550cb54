//! Prometheus counters for a SIP endpoint, fed from the transaction layer's
//! [`LayerStats`] by the driver.

use prometheus::{IntCounter, IntGauge, Registry};

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
    last: LayerStats,
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl SipMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let transactions = IntGauge::new("floorwire_sip_transactions", "SIP transactions alive")?;
        registry.register(Box::new(transactions.clone()))?;
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
                "SIP requests answered 503 because of load",
            )?,
            timeouts: counter(
                registry,
                "floorwire_sip_transaction_timeouts_total",
                "SIP transactions ended by timer B, F, H or an unacknowledged 2xx",
            )?,
            transactions,
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

    /// Counts a message the socket reader refused as malformed.
    pub fn malformed(&self) {
        self.rejected_malformed.inc();
    }

    /// Counts a request the socket reader shed before it reached the layer.
    pub fn shed(&self) {
        self.rejected_overload.inc();
    }
}
