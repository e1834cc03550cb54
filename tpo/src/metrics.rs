//! Prometheus metrics of the TPO (`floorwire_tpo_*`), beside the SIP layer's
//! `floorwire_sip_*`.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The TPO's counters and gauges; cheap to clone.
#[derive(Debug, Clone)]
pub struct TpoMetrics {
    pub registered_devices: IntGauge,
    pub registered_lines: IntGauge,
    pub config_revision: IntGauge,
    pub peer_up: IntGaugeVec,
    /// RTP port pairs free in the relay's range.
    pub rtp_port_pairs_free: IntGauge,
    /// Calls holding RTP legs in the relay (should follow the B2BUA's calls).
    pub rtp_calls: IntGauge,
    /// Bytes the process has allocated and not freed (jemalloc's `stats.allocated`).
    pub heap_allocated: IntGauge,
    /// `floorwire_tpo_calls_*` from the B2BUA core.
    pub calls: floorwire::sip::metrics::CallMetrics,
    registrations: IntCounterVec,
    call_records: IntCounterVec,
    rtp_packets: IntCounterVec,
    recorded_calls: IntCounterVec,
    last_rtp: std::sync::Arc<std::sync::Mutex<floorwire::rtp::RelayTotals>>,
}

impl TpoMetrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let registrations = IntCounterVec::new(
            Opts::new(
                "floorwire_tpo_registrations_total",
                "REGISTER requests by result: bound, removed, challenged, forbidden, refused",
            ),
            &["result"],
        )?;
        registry.register(Box::new(registrations.clone()))?;
        let call_records = IntCounterVec::new(
            Opts::new(
                "floorwire_tpo_call_records_total",
                "call records by result: spooled, spool_refused (spool full or unwritable), delivered, rejected (moved aside), retry",
            ),
            &["result"],
        )?;
        registry.register(Box::new(call_records.clone()))?;
        let peer_up = IntGaugeVec::new(
            Opts::new(
                "floorwire_tpo_peer_up",
                "1 while the peer TPO answers its OPTIONS probes (it gets forks), else 0",
            ),
            &["peer"],
        )?;
        registry.register(Box::new(peer_up.clone()))?;
        let rtp_packets = IntCounterVec::new(
            Opts::new(
                "floorwire_tpo_rtp_packets_total",
                "packets the RTP relay carried for calls that ended, by kind: a_to_b, b_to_a (RTP from the caller's side and back), rtcp, foreign_dropped (RTP from a source other than the endpoint)",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(rtp_packets.clone()))?;
        let recorded_calls = IntCounterVec::new(
            Opts::new(
                "floorwire_tpo_recorded_calls_total",
                "answered calls that ended, by recordings confirmed and kept to the end: copies 0, 1 or 2 (or more)",
            ),
            &["copies"],
        )?;
        registry.register(Box::new(recorded_calls.clone()))?;
        Ok(TpoMetrics {
            registered_devices: gauge(
                "floorwire_tpo_registered_devices",
                "devices with at least one live registration here",
            )?,
            registered_lines: gauge(
                "floorwire_tpo_registered_lines",
                "lines that appear on at least one turret registered here",
            )?,
            config_revision: gauge(
                "floorwire_tpo_config_revision",
                "TSS store revision of the configuration in force (0: none yet)",
            )?,
            peer_up,
            heap_allocated: {
                let g = IntGauge::new(
                    "floorwire_tpo_heap_allocated_bytes",
                    "heap bytes allocated and not freed (jemalloc stats.allocated, read at each scrape; 0 when another allocator is in use)",
                )?;
                registry.register(Box::new(HeapGauge(g.clone())))?;
                g
            },
            rtp_port_pairs_free: gauge(
                "floorwire_tpo_rtp_port_pairs_free",
                "RTP port pairs (RTP and RTCP) free in the relay's range",
            )?,
            rtp_calls: gauge(
                "floorwire_tpo_rtp_calls",
                "calls holding two RTP legs (port pairs) in the relay",
            )?,
            calls: floorwire::sip::metrics::CallMetrics::register(registry, "floorwire_tpo")?,
            registrations,
            call_records,
            rtp_packets,
            recorded_calls,
            last_rtp: std::sync::Arc::default(),
        })
    }

    pub fn call_record(&self, delivery: crate::call_records::Delivery) {
        let label = match delivery {
            crate::call_records::Delivery::Delivered => "delivered",
            crate::call_records::Delivery::Rejected => "rejected",
            crate::call_records::Delivery::Retry => "retry",
        };
        self.call_records.with_label_values(&[label]).inc();
    }

    /// A call record written to the spool (`spooled`) or not (`spool_refused`).
    pub fn call_record_spooled(&self, ok: bool) {
        let label = if ok { "spooled" } else { "spool_refused" };
        self.call_records.with_label_values(&[label]).inc();
    }

    /// An answered call ended with `copies` recordings kept.
    pub fn recorded_call(&self, copies: usize) {
        self.recorded_calls
            .with_label_values(&[&copies.to_string()])
            .inc();
    }

    /// Brings the RTP counters up to the relay's totals.
    pub fn rtp(&self, totals: floorwire::rtp::RelayTotals) {
        let Ok(mut last) = self.last_rtp.lock() else {
            return;
        };
        if *last == totals {
            return;
        }
        for (kind, now, before) in [
            ("a_to_b", totals.a_to_b, last.a_to_b),
            ("b_to_a", totals.b_to_a, last.b_to_a),
            ("rtcp", totals.rtcp, last.rtcp),
            (
                "foreign_dropped",
                totals.foreign_dropped,
                last.foreign_dropped,
            ),
        ] {
            self.rtp_packets
                .with_label_values(&[kind])
                .inc_by(now.saturating_sub(before));
        }
        *last = totals;
    }

    pub fn registration(&self, result: &str) {
        self.registrations.with_label_values(&[result]).inc();
    }
}

/// `floorwire_tpo_heap_allocated_bytes`, read from jemalloc's statistics each time
/// the metrics are gathered: a scrape sees the heap as it is then.
#[derive(Debug, Clone)]
struct HeapGauge(IntGauge);

impl prometheus::core::Collector for HeapGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        if tikv_jemalloc_ctl::epoch::advance().is_ok()
            && let Ok(bytes) = tikv_jemalloc_ctl::stats::allocated::read()
        {
            self.0.set(bytes as i64);
        }
        self.0.collect()
    }
}
