//! Call records reach the real TSS (in-process, its store on SQLite) through the
//! TPO's spool: records made while the TSS is down wait on disk and arrive once it is
//! up, each stored once (posted twice, kept once), and an invalid one is set aside.
//! The records go on one kept connection, and a TSS restart costs one new one. Against
//! stand-in TSSs: one without the batch route, one refusing batches whole, and a
//! batch too large for one request.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use tpo::call_records::{CallRecord, CallRecordsSection, Delivery, Spool, post_spooled};
use tpo::tss_client::{TssClient, TssSection};

const TOKEN: &str = "tpo-token-cdr";

fn record(n: u32, ended: &str) -> CallRecord {
    CallRecord {
        record_id: format!("tpo-1a-20261130-{n:06}"),
        tpo: "tpo-1a".into(),
        call_id: format!("call-{n}@127.0.1.21"),
        user: Some("trader01".into()),
        line: Some("SH-FX".into()),
        direction: "outbound".into(),
        calling: "7001".into(),
        called: "+33142685300".into(),
        started_at: "2026-11-30T09:00:00Z".into(),
        answered_at: Some("2026-11-30T09:00:02Z".into()),
        ended_at: ended.into(),
        outcome: "answered".into(),
        recordings: vec!["rec-a".into(), "rec-b".into()],
    }
}

#[test]
fn records_wait_for_the_tss_and_arrive_once() {
    floorwire::service::tls::install_crypto_provider();
    let dir = scratch_dir("cdr");
    std::fs::create_dir_all(&dir).unwrap();
    // The TSS's API port, chosen now, served later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let poster = Poster::start(&runtime, dir.join("spool"), port);
    let (spool, rx, connections) = (&poster.spool, &poster.rx, &poster.client);

    // The TSS is down: 40 records wait in the spool (one of them twice, one invalid).
    for n in 1..=40 {
        spool.push(&record(n, "2026-11-30T09:01:00Z")).unwrap();
    }
    spool.push(&record(7, "2026-11-30T09:01:00Z")).unwrap();
    spool.push(&record(99, "2026-11-30T08:00:00Z")).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Delivery::Retry
    );
    assert_eq!(
        spool.waiting().len(),
        41,
        "nothing lost while the TSS is down"
    );

    // The TSS comes up.
    let url = format!("sqlite://{}?mode=rwc", dir.join("tss.sqlite3").display());
    let vars: Vec<(String, String)> = [
        ("TSS__STORE__URL", url.as_str()),
        ("TSS__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TSS__API__LISTEN", &format!("127.0.0.1:{port}")),
        ("TSS__API__TLS", "false"),
        ("TSS__API__TPO_TOKENS", &format!("[\"{TOKEN}\"]")),
        ("TSS__FTPES__ENABLED", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config: tss::Config = floorwire::service::config::parse(
        tss::DEFAULT_CONFIG,
        std::path::Path::new("embedded"),
        "TSS",
        &vars,
    )
    .unwrap();
    let store_config = config.store.clone();
    let start_tss = |config: tss::Config| {
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = stop.clone();
        let task = runtime.spawn(async move { tss::run(config, serving, |_| {}).await });
        (stop, task)
    };
    let (tss_stop, tss_task) = start_tss(config.clone());

    // Everything arrives within the backoff; the invalid one is set aside. The
    // poster reports each outcome: wait on those, not on the clock.
    let mut outcomes = Vec::new();
    let settled = |o: &[Delivery]| o.iter().filter(|d| **d != Delivery::Retry).count();
    while settled(&outcomes) < 41 {
        outcomes.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the spool drains"),
        );
    }
    assert!(spool.waiting().is_empty(), "spool drained");
    assert_eq!(
        outcomes
            .iter()
            .filter(|d| **d == Delivery::Rejected)
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(dir.join("spool/rejected"))
            .unwrap()
            .count(),
        1
    );

    // 41 posts on one kept connection (a second only should hyper not be ready in
    // time), not one connection a record.
    let opened = connections.connections_opened();
    assert!(
        (1..=2).contains(&opened),
        "{opened} connections for 41 records"
    );

    // The TSS restarts: the kept connection is dead; the next record goes on a new one.
    tss_stop.cancel();
    runtime.block_on(tss_task).unwrap().unwrap();
    let (tss_stop, tss_task) = start_tss(config);
    spool.push(&record(41, "2026-11-30T09:01:00Z")).unwrap();
    let mut outcome = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    while outcome == Delivery::Retry {
        outcome = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    assert_eq!(outcome, Delivery::Delivered);
    assert_eq!(connections.connections_opened(), opened + 1);

    // A spool batch of several records goes as one request: a new record, one already
    // stored, an invalid one (set aside), each with its own outcome.
    spool
        .push_batch(&[
            record(42, "2026-11-30T09:01:00Z"),
            record(3, "2026-11-30T09:01:00Z"),
            record(98, "2026-11-30T08:00:00Z"),
        ])
        .unwrap();
    let batch: Vec<Delivery> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(60)).unwrap())
        .collect();
    assert_eq!(
        batch,
        [Delivery::Delivered, Delivery::Delivered, Delivery::Rejected]
    );
    assert_eq!(
        std::fs::read_dir(dir.join("spool/rejected"))
            .unwrap()
            .count(),
        2
    );
    assert!(spool.waiting().is_empty());

    // Posted again (a TPO restarting mid-send would): still stored once.
    spool.push(&record(7, "2026-11-30T09:01:00Z")).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        Delivery::Delivered
    );
    assert!(spool.waiting().is_empty());
    let stored = runtime.block_on(async {
        let store = tss::open_store(&store_config).await.unwrap();
        let all = store
            .call_records(&tss::store::CallFilter::default())
            .await
            .unwrap();
        store.close().await;
        all
    });
    assert_eq!(stored.len(), 42, "42 distinct valid records, each once");

    // A spool batch of 600 records goes in two requests (500 at most a request); the
    // real TSS stores them all.
    let many: Vec<CallRecord> = (1000..1600)
        .map(|n| record(n, "2026-11-30T09:01:00Z"))
        .collect();
    spool.push_batch(&many).unwrap();
    for _ in 0..600 {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)).unwrap(),
            Delivery::Delivered
        );
    }
    assert!(spool.waiting().is_empty());
    let stored = runtime.block_on(async {
        let store = tss::open_store(&store_config).await.unwrap();
        let all = store
            .call_records(&tss::store::CallFilter {
                limit: Some(10_000),
                ..Default::default()
            })
            .await
            .unwrap();
        store.close().await;
        all
    });
    assert_eq!(stored.len(), 642);
    assert_eq!(stored[0].recordings, ["rec-a", "rec-b"]);

    poster.stop(&runtime);
    tss_stop.cancel();
    runtime.block_on(tss_task).unwrap().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// What a stand-in TSS was sent: the bodies posted to `POST /api/call-records` and
/// to `POST /api/call-records/batch`.
#[derive(Default)]
struct Posted {
    singles: Vec<String>,
    batches: Vec<String>,
}

/// How the stand-in TSS answers the batch route.
#[derive(Clone, Copy)]
enum BatchRoute {
    /// 404, as a TSS older than the route.
    Missing,
    /// 413 whatever the batch, as a TSS with a smaller request limit.
    TooLarge,
    /// 201 for every record, as the real TSS does for new records.
    Stores,
}

/// A stand-in TSS on a port of its own: records bodies and answers as `batch` says.
fn stand_in(
    runtime: &tokio::runtime::Runtime,
    batch: BatchRoute,
) -> (u16, std::sync::Arc<std::sync::Mutex<Posted>>) {
    use axum::http::StatusCode;
    let posted: std::sync::Arc<std::sync::Mutex<Posted>> = std::sync::Arc::default();
    let (singles, batches) = (posted.clone(), posted.clone());
    let app = axum::Router::new()
        .route(
            "/api/call-records",
            axum::routing::post(move |body: String| async move {
                singles.lock().unwrap().singles.push(body);
                StatusCode::CREATED
            }),
        )
        .route(
            "/api/call-records/batch",
            axum::routing::post(move |body: String| async move {
                let records = serde_json::from_str::<Vec<serde_json::Value>>(&body)
                    .map(|r| r.len())
                    .unwrap_or(0);
                batches.lock().unwrap().batches.push(body);
                match batch {
                    BatchRoute::Missing => (StatusCode::NOT_FOUND, String::new()),
                    BatchRoute::TooLarge => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "{\"error\":\"too large\"}".into(),
                    ),
                    BatchRoute::Stores => {
                        let results = vec![serde_json::json!({"status": 201}); records];
                        (
                            StatusCode::OK,
                            serde_json::json!({ "results": results }).to_string(),
                        )
                    }
                }
            }),
        )
        // A big batch must not meet axum's own 2 MiB limit before the handler.
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (port, posted)
}

/// A temporary folder for `name`, emptied.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("floorwire-tpo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A spool and its poster against a TSS (real or stand-in); the poster's outcomes come
/// on `rx`.
struct Poster {
    dir: std::path::PathBuf,
    spool: Spool,
    /// A clone of the poster's client: it counts the connections opened.
    client: TssClient,
    rx: std::sync::mpsc::Receiver<Delivery>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Poster {
    /// A spool in `dir` (at most 1,000 records), posting to the TSS on `port`.
    fn start(runtime: &tokio::runtime::Runtime, dir: std::path::PathBuf, port: u16) -> Poster {
        let spool = Spool::open(&CallRecordsSection {
            spool_dir: dir.display().to_string(),
            max_spooled: 1000,
            tpo: String::new(),
        })
        .unwrap();
        let client = TssClient::new(&TssSection {
            url: format!("http://127.0.0.1:{port}"),
            fallback_urls: Vec::new(),
            token: TOKEN.into(),
            ca_file: String::new(),
            poll_interval_ms: 100,
        })
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = runtime.spawn(post_spooled(
            spool.clone(),
            client.clone(),
            shutdown.clone(),
            move |d| {
                let _ = tx.send(d);
            },
        ));
        Poster {
            dir,
            spool,
            client,
            rx,
            shutdown,
            task,
        }
    }

    /// Waits for `n` records delivered, and finds the spool empty then.
    fn expect_delivered(&self, n: usize) {
        for i in 0..n {
            assert_eq!(
                self.rx.recv_timeout(Duration::from_secs(30)).unwrap(),
                Delivery::Delivered,
                "record {i} of {n}"
            );
        }
        assert!(self.spool.waiting().is_empty());
    }

    fn stop(self, runtime: &tokio::runtime::Runtime) {
        self.shutdown.cancel();
        runtime.block_on(self.task).unwrap();
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// A TSS older than the batch route (it answers 404 there) still gets every record,
/// one request each, and the TPO remembers it: the next batch does not try the batch
/// route again.
#[test]
fn a_tss_without_the_batch_route_gets_records_one_by_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (port, posted) = stand_in(&runtime, BatchRoute::Missing);
    let poster = Poster::start(&runtime, scratch_dir("cdr1"), port);
    poster
        .spool
        .push_batch(&[1, 2, 3].map(|n| record(n, "2026-11-30T09:01:00Z")))
        .unwrap();
    poster.expect_delivered(3);
    poster
        .spool
        .push_batch(&[4, 5].map(|n| record(n, "2026-11-30T09:01:00Z")))
        .unwrap();
    poster.expect_delivered(2);
    let posted = posted.lock().unwrap();
    assert_eq!(posted.singles.len(), 5, "one request a record");
    assert!(posted.singles[2].contains("tpo-1a-20261130-000003"));
    assert_eq!(posted.batches.len(), 1, "the batch route tried once");
    drop(posted);
    poster.stop(&runtime);
}

/// A batch the TSS refuses as a whole (413 here) does not block the spool: its
/// records go one request each, and the next batch tries the batch route again.
#[test]
fn a_batch_refused_whole_goes_record_by_record() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (port, posted) = stand_in(&runtime, BatchRoute::TooLarge);
    let poster = Poster::start(&runtime, scratch_dir("cdr2"), port);
    poster
        .spool
        .push_batch(&[1, 2, 3].map(|n| record(n, "2026-11-30T09:01:00Z")))
        .unwrap();
    poster.expect_delivered(3);
    poster
        .spool
        .push(&record(4, "2026-11-30T09:01:00Z"))
        .unwrap();
    poster.expect_delivered(1);
    let posted = posted.lock().unwrap();
    assert_eq!(
        posted.batches.len(),
        2,
        "each batch tried on the batch route"
    );
    assert_eq!(posted.singles.len(), 4);
    drop(posted);
    poster.stop(&runtime);
}

/// A spool batch whose records add up to more than 1 MiB goes in several requests,
/// none over 1 MiB, every record in exactly one of them, in order.
#[test]
fn a_large_spool_batch_goes_in_requests_of_at_most_one_mebibyte() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (port, posted) = stand_in(&runtime, BatchRoute::Stores);
    let poster = Poster::start(&runtime, scratch_dir("cdr3"), port);
    // Six records of ~300 KB each (a long calling number; the stand-in does not
    // check it): three to a request.
    let records: Vec<CallRecord> = (1..=6)
        .map(|n| CallRecord {
            calling: "7".repeat(300_000),
            ..record(n, "2026-11-30T09:01:00Z")
        })
        .collect();
    poster.spool.push_batch(&records).unwrap();
    poster.expect_delivered(6);
    let posted = posted.lock().unwrap();
    assert_eq!(posted.batches.len(), 2, "two requests");
    let mut ids = Vec::new();
    for body in &posted.batches {
        assert!(body.len() <= 1 << 20, "a request of {} bytes", body.len());
        let batch: Vec<CallRecord> = serde_json::from_str(body).unwrap();
        ids.extend(batch.into_iter().map(|r| r.record_id));
    }
    let expected: Vec<String> = records.into_iter().map(|r| r.record_id).collect();
    assert_eq!(ids, expected);
    assert!(posted.singles.is_empty());
    drop(posted);
    poster.stop(&runtime);
}
