//! Prometheus metrics of the TSS (`floorwire_tss_*`).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The TSS's counters and gauges; cheap to clone.
#[derive(Debug, Clone)]
pub struct TssMetrics {
    logins: IntCounterVec,
    call_records: IntCounterVec,
    revision: IntGauge,
}

impl TssMetrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let logins = IntCounterVec::new(
            Opts::new(
                "floorwire_tss_logins_total",
                "logins (API and FTPES) by result: ok, refused, throttled, unavailable (no directory answered)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(logins.clone()))?;
        let call_records = IntCounterVec::new(
            Opts::new(
                "floorwire_tss_call_records_total",
                "call records posted by TPOs by result: stored, duplicate, refused (invalid), failed (store error)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(call_records.clone()))?;
        let revision = IntGauge::new(
            "floorwire_tss_store_revision",
            "store revision last seen by this TSS",
        )?;
        registry.register(Box::new(revision.clone()))?;
        Ok(TssMetrics {
            logins,
            call_records,
            revision,
        })
    }

    pub fn login(&self, result: &str) {
        self.logins.with_label_values(&[result]).inc();
    }

    pub fn call_record(&self, result: &str) {
        self.call_records.with_label_values(&[result]).inc();
    }

    pub fn set_revision(&self, revision: i64) {
        self.revision.set(revision);
    }
}

/// The `result` label of a login's outcome.
pub fn login_result<T>(result: &Result<T, crate::Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(crate::Error::Throttled { .. }) => "throttled",
        Err(crate::Error::DirectoryUnavailable(_)) => "unavailable",
        Err(_) => "refused",
    }
}
