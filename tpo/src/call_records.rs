//! Call records on their way to the TSS: every record is first written to a bounded
//! local spool, then posted — a spool batch at a time, to `POST
//! /api/call-records/batch` (record by record to `POST /api/call-records` when the
//! TSS has no batch route) — and dropped from the spool
//! only once the TSS has answered 201 (stored) or 200 (already stored — ingestion is
//! idempotent by `record_id`). A TSS that is down or slow delays records; it never
//! loses them. A record the TSS refuses as invalid (400) is moved aside to
//! `rejected/` and logged, not retried forever.
//!
//! The spool holds batches: each file (`FIRST-RECORD-ID.jsonl`, one JSON record a
//! line) is written whole, synced once, then renamed into place, so the disk costs
//! one sync per batch however many calls end at once. The number of records waiting
//! is kept in memory (counted from the files at start), so a push never lists the
//! folder. A batch partly delivered is rewritten with what is left; should the TPO
//! stop in between, the records already delivered are posted again and the TSS
//! answers 200.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Records written as one batch file, at most.
const WRITER_BATCH: usize = 512;

/// How long the writer gathers records after the first of a batch: the longest a
/// record waits in memory before it is on disk.
const WRITER_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

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
            // Group commit: what comes within WRITER_LINGER of the first record (up to
            // a batch) is written as one file with one sync, so a busy TPO syncs a few
            // times a second, not once a call.
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                let until = std::time::Instant::now() + WRITER_LINGER;
                while batch.len() < WRITER_BATCH {
                    match rx.try_recv() {
                        Ok(record) => batch.push(record),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty)
                            if std::time::Instant::now() < until =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
                let (fit, over) = batch.split_at(batch.len().min(spool.room()));
                let written = spool.push_batch(fit);
                if let Err(e) = &written {
                    tracing::error!(records = fit.len(), error = %e, "call records not spooled");
                }
                if !over.is_empty() {
                    tracing::error!(
                        records = over.len(),
                        "call record spool full: records refused"
                    );
                }
                for _ in fit {
                    metrics.call_record_spooled(written.is_ok());
                }
                for _ in over {
                    metrics.call_record_spooled(false);
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

/// The spool: batches of records written, waiting to be posted.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max: usize,
    wake: Arc<Notify>,
    /// Records waiting, in every batch.
    count: Arc<AtomicUsize>,
}

/// A batch's file name from its first record's id: only `A-Z a-z 0-9 - _ .`, never
/// starting with a dot.
fn file_name(record_id: &str) -> Result<String> {
    let ok = !record_id.is_empty()
        && record_id.len() <= 128
        && !record_id.starts_with('.')
        && record_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(format!("{record_id}.jsonl"))
    } else {
        Err(Error::Config(format!(
            "call record id {record_id:?}: only A-Z a-z 0-9 - _ . are spooled"
        )))
    }
}

/// The records of a batch file, one JSON text each (none if it cannot be read).
fn batch_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Spool {
    /// Opens (creating) the spool folder and counts the records waiting in it.
    pub fn open(config: &CallRecordsSection) -> Result<Self> {
        let dir = PathBuf::from(&config.spool_dir);
        std::fs::create_dir_all(dir.join("rejected"))
            .map_err(|e| Error::Config(format!("call_records.spool_dir {}: {e}", dir.display())))?;
        if config.max_spooled == 0 {
            return Err(Error::Config(
                "call_records.max_spooled: must be at least 1".into(),
            ));
        }
        let spool = Spool {
            dir,
            max: config.max_spooled,
            wake: Arc::new(Notify::new()),
            count: Arc::default(),
        };
        let waiting: usize = spool.waiting().iter().map(|p| batch_lines(p).len()).sum();
        spool.count.store(waiting, Ordering::Relaxed);
        Ok(spool)
    }

    /// Batch files waiting, oldest first (by name: record ids start with a time).
    pub fn waiting(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        files
    }

    /// Records waiting.
    pub fn records(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Records that still fit.
    pub fn room(&self) -> usize {
        self.max.saturating_sub(self.records())
    }

    /// Writes `record` to the spool as a batch of its own.
    pub fn push(&self, record: &CallRecord) -> Result<()> {
        self.push_batch(std::slice::from_ref(record))
    }

    /// Writes `records` to the spool as one batch (durably: written, synced once,
    /// renamed) and wakes the poster. Refused whole when they do not all fit.
    pub fn push_batch(&self, records: &[CallRecord]) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let name = file_name(&first.record_id)?;
        if self.records() + records.len() > self.max {
            return Err(Error::Config(format!(
                "call record spool full ({} records): TSS unreachable for too long",
                self.max
            )));
        }
        let mut bytes = Vec::with_capacity(records.len() * 512);
        for record in records {
            serde_json::to_writer(&mut bytes, record).map_err(|e| Error::Config(e.to_string()))?;
            bytes.push(b'\n');
        }
        let path = self.dir.join(&name);
        // The same first record again (a batch written twice) replaces its file.
        let replaced = batch_lines(&path).len();
        self.write_batch(&path, &bytes)?;
        self.count.fetch_add(records.len(), Ordering::Relaxed);
        self.count
            .fetch_sub(replaced.min(self.records()), Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    /// Writes `bytes` as the batch file `path` (a synced temporary file renamed).
    fn write_batch(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(".{name}.tmp"));
        write_synced(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// `done` records of the batch at `path` are settled; `rest` (the lines still to
    /// post) stay in it, or the file goes when none is left.
    fn settle(&self, path: &Path, done: usize, rest: &[String]) {
        if rest.is_empty() {
            let _ = std::fs::remove_file(path);
        } else if done > 0 {
            let mut bytes = rest.join("\n").into_bytes();
            bytes.push(b'\n');
            if let Err(e) = self.write_batch(path, &bytes) {
                tracing::warn!(file = %path.display(), error = %e, "spool batch not rewritten; its delivered records will be posted again");
            }
        }
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(done))
            });
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

/// Sets aside a record the TSS refused as invalid, in `rejected/`.
fn reject(spool: &Spool, record: &str, why: &str) {
    let id = serde_json::from_str::<serde_json::Value>(record)
        .ok()
        .and_then(|v| v["record_id"].as_str().map(str::to_owned))
        .and_then(|id| file_name(&id).ok())
        .unwrap_or_else(|| format!("unnamed-{}.jsonl", rand::random::<u32>()));
    let _ = std::fs::write(spool.dir.join("rejected").join(&id), record);
    tracing::error!(file = %id, reason = why, "TSS refused a call record as invalid; moved to rejected/");
}

/// What the TSS answered for one record.
fn delivery_of(spool: &Spool, record: &str, status: u16, why: &str) -> Delivery {
    match status {
        200 | 201 => Delivery::Delivered,
        400 => {
            reject(spool, record, why);
            Delivery::Rejected
        }
        status => {
            tracing::warn!(status, "TSS did not take a call record; will retry");
            Delivery::Retry
        }
    }
}

/// Posts one record (a JSON text) to the TSS.
async fn deliver(spool: &Spool, client: &TssClient, record: &str) -> Delivery {
    match client
        .post_json("/api/call-records", record.as_bytes().to_vec())
        .await
    {
        Ok((status, body)) => delivery_of(spool, record, status, &String::from_utf8_lossy(&body)),
        Err(e) => {
            tracing::debug!(error = %e, "TSS unreachable for call records; will retry");
            Delivery::Retry
        }
    }
}

/// The largest request body a batch is posted in: records beyond it go in the next
/// request. Well under the TSS's request limit (2 MiB).
const MAX_BATCH_BODY: usize = 1 << 20;

/// Records posted in one request, at most (the TSS takes up to 1,000).
const MAX_BATCH_RECORDS: usize = 500;

/// How long records go one request each to a TSS that answered 404 or 405 on the
/// batch route (one older than this TPO) before the batch route is tried again.
const NO_BATCH_ROUTE_FOR: Duration = Duration::from_secs(300);

/// What `POST /api/call-records/batch` answered.
enum BatchAnswer {
    /// One (status, error) a record, in order.
    Results(Vec<(u16, String)>),
    /// A TSS without the batch route (older than this TPO): post one by one.
    NotSupported,
    /// The batch as a whole refused (400, 413): post one by one, so that each record
    /// gets its own verdict and a bad one does not hold up the others.
    Refused,
    /// Not taken now (unreachable, failing, or an answer that does not add up).
    Retry,
}

/// How many of `records`, from the first, go in one request: at most
/// [`MAX_BATCH_RECORDS`] and [`MAX_BATCH_BODY`] bytes, and at least one.
fn batch_len(records: &[String]) -> usize {
    let mut body = 2;
    let mut n = 0;
    for record in records.iter().take(MAX_BATCH_RECORDS) {
        body += record.len() + 1;
        if n > 0 && body > MAX_BATCH_BODY {
            break;
        }
        n += 1;
    }
    n
}

/// Posts `records` (JSON texts) as one batch.
async fn post_batch(client: &TssClient, records: &[String]) -> BatchAnswer {
    let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record.as_bytes());
    }
    body.push(b']');
    let (status, answer) = match client.post_json("/api/call-records/batch", body).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(error = %e, "TSS unreachable for call records; will retry");
            return BatchAnswer::Retry;
        }
    };
    match status {
        200 => {}
        404 | 405 => return BatchAnswer::NotSupported,
        400 | 413 => {
            tracing::warn!(
                status,
                records = records.len(),
                answer = %String::from_utf8_lossy(&answer),
                "TSS refused a batch of call records as a whole; posting them one by one"
            );
            return BatchAnswer::Refused;
        }
        status => {
            tracing::warn!(
                status,
                "TSS did not take a batch of call records; will retry"
            );
            return BatchAnswer::Retry;
        }
    }
    let results: Option<Vec<(u16, String)>> = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| {
            v["results"].as_array().map(|results| {
                results
                    .iter()
                    .map(|r| {
                        let status = r["status"].as_u64().and_then(|s| u16::try_from(s).ok());
                        (
                            status.unwrap_or(0),
                            r["error"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
        });
    match results {
        Some(results) if results.len() == records.len() => BatchAnswer::Results(results),
        _ => {
            tracing::warn!(
                "TSS answered a batch of call records with no result a record; will retry"
            );
            BatchAnswer::Retry
        }
    }
}

/// Posts `records` one request each, in order, up to and with the first the TSS does
/// not take now.
async fn deliver_each(spool: &Spool, client: &TssClient, records: &[String]) -> Vec<Delivery> {
    let mut outcomes = Vec::with_capacity(records.len());
    for record in records {
        let outcome = deliver(spool, client, record).await;
        outcomes.push(outcome);
        if outcome == Delivery::Retry {
            break;
        }
    }
    outcomes
}

/// Posts the records of one batch file in order, as few requests as
/// [`MAX_BATCH_BODY`] and [`MAX_BATCH_RECORDS`] allow (a request a record to a TSS
/// without the batch route, remembered in `no_batch_route_until`); the file keeps
/// what is left when the TSS stops taking them. False when it did (retry later).
async fn deliver_batch(
    spool: &Spool,
    client: &TssClient,
    path: &Path,
    no_batch_route_until: &mut Option<Instant>,
    on_delivery: &impl Fn(Delivery),
) -> bool {
    let lines = batch_lines(path);
    if lines.is_empty() {
        spool.settle(path, 0, &[]);
        return true;
    }
    let mut done = 0;
    while done < lines.len() {
        let chunk = &lines[done..done + batch_len(&lines[done..])];
        if no_batch_route_until.is_some_and(|until| Instant::now() >= until) {
            *no_batch_route_until = None;
        }
        let outcomes = if no_batch_route_until.is_some() {
            deliver_each(spool, client, chunk).await
        } else {
            match post_batch(client, chunk).await {
                BatchAnswer::Results(results) => {
                    let mut outcomes = Vec::with_capacity(chunk.len());
                    for (line, (status, why)) in chunk.iter().zip(&results) {
                        let outcome = delivery_of(spool, line, *status, why);
                        outcomes.push(outcome);
                        if outcome == Delivery::Retry {
                            break;
                        }
                    }
                    outcomes
                }
                BatchAnswer::NotSupported => {
                    tracing::info!(
                        "TSS has no call-record batch route; posting records one by one for {} s",
                        NO_BATCH_ROUTE_FOR.as_secs()
                    );
                    *no_batch_route_until = Some(Instant::now() + NO_BATCH_ROUTE_FOR);
                    deliver_each(spool, client, chunk).await
                }
                BatchAnswer::Refused => deliver_each(spool, client, chunk).await,
                BatchAnswer::Retry => vec![Delivery::Retry],
            }
        };
        let taken = outcomes.iter().filter(|o| **o != Delivery::Retry).count();
        done += taken;
        // The spool is settled before the outcomes are told: whoever counts outcomes
        // finds the spool as they say.
        spool.settle(path, taken, &lines[done..]);
        for outcome in &outcomes {
            on_delivery(*outcome);
        }
        if taken < chunk.len() {
            return false;
        }
    }
    true
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
    let mut no_batch_route_until = None;
    loop {
        let mut stalled = false;
        for path in spool.waiting() {
            if shutdown.is_cancelled() {
                return;
            }
            if !deliver_batch(
                &spool,
                &client,
                &path,
                &mut no_batch_route_until,
                &on_delivery,
            )
            .await
            {
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
    fn batches_are_bounded_in_records_and_bytes() {
        let small = vec!["x".repeat(100); 1200];
        assert_eq!(batch_len(&small), MAX_BATCH_RECORDS);
        assert_eq!(batch_len(&small[..7]), 7);
        assert_eq!(batch_len(&[]), 0);
        // 300 KB records: three fit in a 1 MiB body, the fourth would not.
        let large = vec!["y".repeat(300_000); 5];
        assert_eq!(batch_len(&large), 3);
        // A record larger than the bound still goes, alone.
        let huge = vec!["z".repeat(2 * MAX_BATCH_BODY); 2];
        assert_eq!(batch_len(&huge), 1);
    }

    #[test]
    fn record_ids_are_safe_file_names() {
        assert_eq!(
            file_name("tpo-1a-20261130T1000-000001").unwrap(),
            "tpo-1a-20261130T1000-000001.jsonl"
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
        assert_eq!(names, ["r-1.jsonl", "r-2.jsonl"]);
        assert_eq!(spool.records(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
