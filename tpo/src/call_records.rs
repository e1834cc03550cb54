//! Call records on their way to the TSS: every record is first written to a bounded
//! local spool (one file per record, written whole then renamed into place), then
//! posted to `POST /api/call-records`, and removed only once the TSS has answered
//! 201 (stored) or 200 (already stored — ingestion is idempotent by `record_id`). A
//! TSS that is down or slow delays records; it never loses them. A record the TSS
//! refuses as invalid (400) is moved aside to `rejected/` and logged, not retried
//! forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::tss_client::TssClient;

/// `[call_records]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRecordsSection {
    /// Folder of records waiting for the TSS.
    pub spool_dir: String,
    /// Most records kept waiting; beyond it new records are refused (and counted).
    pub max_spooled: usize,
    /// This TPO's name in its records (`tpo`, and the start of each `record_id`);
    /// empty: `tpo-` and the SIP listen address.
    pub tpo: String,
}

/// Records queued between the SIP core and the spool writer, at most.
const WRITER_QUEUE: usize = 10_000;

/// Starts the thread that writes each record the router hands over to the spool (the
/// SIP core never waits on the disk); returns its queue.
pub fn spool_writer(
    spool: Spool,
    metrics: crate::metrics::TpoMetrics,
) -> crate::router::RecordSink {
    let (queue, mut rx) = tokio::sync::mpsc::channel::<CallRecord>(WRITER_QUEUE);
    let sink = crate::router::RecordSink {
        queue,
        metrics: metrics.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name("call-record-spool".into())
        .spawn(move || {
            while let Some(record) = rx.blocking_recv() {
                match spool.push(&record) {
                    Ok(()) => metrics.call_record_spooled(true),
                    Err(e) => {
                        metrics.call_record_spooled(false);
                        tracing::error!(record = %record.record_id, error = %e, "call record not spooled");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "call record spool writer not started");
    }
    sink
}

/// A call record as the TSS ingests it (contract: docs/tss-api.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub record_id: String,
    pub tpo: String,
    pub call_id: String,
    pub user: Option<String>,
    pub line: Option<String>,
    pub direction: String,
    pub calling: String,
    pub called: String,
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: String,
    pub outcome: String,
    pub recordings: Vec<String>,
}

/// The spool: records written, waiting to be posted.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max: usize,
    wake: Arc<Notify>,
}

/// A record id as a file name: only `A-Z a-z 0-9 - _ .`, never starting with a dot.
fn file_name(record_id: &str) -> Result<String> {
    let ok = !record_id.is_empty()
        && record_id.len() <= 128
        && !record_id.starts_with('.')
        && record_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(format!("{record_id}.json"))
    } else {
        Err(Error::Config(format!(
            "call record id {record_id:?}: only A-Z a-z 0-9 - _ . are spooled"
        )))
    }
}

impl Spool {
    /// Opens (creating) the spool folder.
    pub fn open(config: &CallRecordsSection) -> Result<Self> {
        let dir = PathBuf::from(&config.spool_dir);
        std::fs::create_dir_all(dir.join("rejected"))
            .map_err(|e| Error::Config(format!("call_records.spool_dir {}: {e}", dir.display())))?;
        if config.max_spooled == 0 {
            return Err(Error::Config(
                "call_records.max_spooled: must be at least 1".into(),
            ));
        }
        Ok(Spool {
            dir,
            max: config.max_spooled,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Records waiting, oldest first (by file name: record ids start with a time).
    pub fn waiting(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    }

    /// Writes `record` to the spool (durably: written, synced, renamed) and wakes the
    /// poster. Refused when the spool is full.
    pub fn push(&self, record: &CallRecord) -> Result<()> {
        let name = file_name(&record.record_id)?;
        if self.waiting().len() >= self.max {
            return Err(Error::Config(format!(
                "call record spool full ({} records): TSS unreachable for too long",
                self.max
            )));
        }
        let bytes = serde_json::to_vec(record).map_err(|e| Error::Config(e.to_string()))?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        write_synced(&tmp, &bytes)?;
        std::fs::rename(&tmp, self.dir.join(&name))?;
        self.wake.notify_one();
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// What happened to one spooled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Rejected,
    Retry,
}

/// Posts one spooled file; removes it when the TSS has it.
pub async fn deliver(spool: &Spool, client: &TssClient, path: &Path) -> Delivery {
    let Ok(bytes) = std::fs::read(path) else {
        return Delivery::Retry;
    };
    match client.post_json("/api/call-records", bytes).await {
        Ok(200 | 201) => {
            let _ = std::fs::remove_file(path);
            Delivery::Delivered
        }
        Ok(400) => {
            if let Some(name) = path.file_name() {
                let _ = std::fs::rename(path, spool.dir.join("rejected").join(name));
            }
            tracing::error!(file = %path.display(), "TSS refused a call record as invalid; moved to rejected/");
            Delivery::Rejected
        }
        Ok(status) => {
            tracing::warn!(status, "TSS did not take a call record; will retry");
            Delivery::Retry
        }
        Err(e) => {
            tracing::debug!(error = %e, "TSS unreachable for call records; will retry");
            Delivery::Retry
        }
    }
}

/// Sends spooled records until `shutdown`, oldest first; backs off (0.5 s doubling to
/// 30 s) while the TSS does not take them. `on_delivery` counts outcomes.
pub async fn post_spooled(
    spool: Spool,
    client: TssClient,
    shutdown: CancellationToken,
    on_delivery: impl Fn(Delivery) + Send,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut stalled = false;
        for path in spool.waiting() {
            if shutdown.is_cancelled() {
                return;
            }
            let outcome = deliver(&spool, &client, &path).await;
            on_delivery(outcome);
            if outcome == Delivery::Retry {
                stalled = true;
                break;
            }
            backoff = Duration::from_millis(500);
        }
        let wait = if stalled {
            let w = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            w
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = spool.wake.notified(), if !stalled => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_safe_file_names() {
        assert_eq!(
            file_name("tpo-1a-20261130T1000-000001").unwrap(),
            "tpo-1a-20261130T1000-000001.json"
        );
        for bad in ["", "../x", ".hidden", "a/b", "a b", "x\\y"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_spool_is_bounded_and_ordered() {
        let dir = std::env::temp_dir().join(format!("floorwire-spool-{}", std::process::id()));
        let spool = Spool::open(&CallRecordsSection {
            spool_dir: dir.display().to_string(),
            max_spooled: 2,
            tpo: String::new(),
        })
        .unwrap();
        let record = |id: &str| CallRecord {
            record_id: id.into(),
            tpo: "tpo-1a".into(),
            call_id: "c@h".into(),
            user: None,
            line: None,
            direction: "outbound".into(),
            calling: "7001".into(),
            called: "0142685300".into(),
            started_at: "2026-11-30T10:00:00Z".into(),
            answered_at: None,
            ended_at: "2026-11-30T10:00:05Z".into(),
            outcome: "no_answer".into(),
            recordings: vec![],
        };
        spool.push(&record("r-2")).unwrap();
        spool.push(&record("r-1")).unwrap();
        assert!(spool.push(&record("r-3")).is_err(), "full");
        let names: Vec<String> = spool
            .waiting()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["r-1.json", "r-2.json"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
