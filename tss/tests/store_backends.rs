//! The profile store, the same checks on SQLite, MariaDB and PostgreSQL (real servers).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use floorwire::sip::auth::{Algorithm, ha1};
use tss::Error;
use tss::model::{CallRecord, Direction, Line, LineKind, Outcome, ProfileEdit};
use tss::store::{CallFilter, Ingested, Store};

const FLOOR: &str = include_str!("fixtures/floor.json");

fn field_of<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn record(id: &str, user: &str, called: &str, start: &str, answered: bool) -> CallRecord {
    CallRecord {
        record_id: id.into(),
        tpo: "tpo-1a".into(),
        call_id: format!("{id}@127.0.1.21"),
        user: Some(user.into()),
        line: Some("SH-FX".into()),
        direction: Direction::Outbound,
        calling: "7001".into(),
        called: called.into(),
        started_at: format!("2026-11-30T{start}Z"),
        answered_at: answered.then(|| format!("2026-11-30T{start}.500Z")),
        ended_at: "2026-11-30T23:00:00Z".into(),
        outcome: if answered {
            Outcome::Answered
        } else {
            Outcome::NoAnswer
        },
        recordings: vec!["rec-a".into(), "rec-b".into()],
    }
}

async fn exercise(backend: &str, url: &str) {
    let store = Store::connect(url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate twice is a no-op");
    assert_eq!(store.revision().await.unwrap(), 0, "{backend}");

    // Seeding is one change: one revision, one profile version per user.
    let seed = tss::seed::parse(FLOOR).unwrap();
    let rev = tss::seed::apply(&store, &seed, "seed").await.expect("seed");
    assert_eq!(rev, 1, "{backend}");
    assert_eq!(store.users().await.unwrap().len(), 3);
    let doc = store.profile_document("trader01").await.unwrap();
    assert_eq!(doc.tpos, ["127.0.1.21:5060", "127.0.1.22:5060"]);
    assert_eq!(doc.lines.len(), 3);
    assert_eq!(doc.lines[0].id, "PW-GS");
    assert_eq!(doc.lines[0].far_end.as_deref(), Some("7002"));
    assert_eq!(
        doc.turrets[0].software.as_ref().unwrap().file_name,
        "turret-fw-4.2.0.bin"
    );
    let versions = store.profile_versions("trader01").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].actor, "seed");

    // A bad seed is refused whole, naming the field; nothing of it lands.
    let bad = tss::seed::parse(
        r#"{"lines":[{"id":"NEW","kind":"shared","number":"7200"}],
        "profiles":{"trader02":{"appearances":[{"line":"NOPE","button":9}]}}}"#,
    )
    .unwrap();
    let e = tss::seed::apply(&store, &bad, "seed").await;
    assert_eq!(field_of(e), "profiles.trader02.appearances[0].line");
    assert!(
        matches!(store.line("NEW").await, Err(Error::NotFound { .. })),
        "{backend}"
    );
    assert_eq!(
        store.revision().await.unwrap(),
        1,
        "{backend}: refused change left no revision"
    );

    // A bad profile edit is refused whole with the field named.
    let before = store.profile_edit("trader02").await.unwrap();
    let mut edit: ProfileEdit = before.clone();
    edit.appearances.push(tss::model::Appearance {
        line: "PW-GS".into(),
        access: tss::model::AccessRight::Talk,
        button: 1,
    });
    let mut w = store.write("admin").await.unwrap();
    assert_eq!(
        field_of(w.put_profile("trader02", &edit).await),
        "appearances[2].button"
    );
    drop(w);
    assert_eq!(store.profile_edit("trader02").await.unwrap(), before);

    // A line edit re-versions every profile it appears on; old versions stay readable.
    let mut line = store.line("SH-FX").await.unwrap();
    line.label = "FX desk (new)".into();
    let mut w = store.write("admin").await.unwrap();
    w.put_line(&line).await.unwrap();
    let rev = w.commit().await.unwrap();
    assert_eq!(rev, 2, "{backend}: refused writes roll their revision back");
    for user in ["trader01", "trader02"] {
        let versions = store.profile_versions(user).await.unwrap();
        assert_eq!(versions.len(), 2, "{backend} {user}");
        assert_eq!(versions[1].actor, "admin");
        assert_eq!(versions[1].revision, rev);
    }
    let v1 = store.profile_version("trader01", Some(1)).await.unwrap();
    let v2 = store.profile_version("trader01", None).await.unwrap();
    assert_eq!(
        v1.document.as_ref().unwrap()["lines"][1]["label"],
        "FX desk"
    );
    assert_eq!(
        v2.document.as_ref().unwrap()["lines"][1]["label"],
        "FX desk (new)"
    );
    let patch = tss::profile::diff(v1.document.as_ref().unwrap(), v2.document.as_ref().unwrap());
    assert_eq!(
        patch,
        serde_json::json!([{"op": "replace", "path": "/lines/1/label", "value": "FX desk (new)"}])
    );

    // An identical write changes nothing: no revision, no version.
    let mut w = store.write("admin").await.unwrap();
    w.put_line(&line).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), rev);
    assert_eq!(store.profile_versions("trader01").await.unwrap().len(), 2);

    // The audit trail says who changed what, with before and after.
    let changes = store.changes(1, 100).await.unwrap();
    assert_eq!(changes.len(), 1, "{backend}: {changes:?}");
    assert_eq!(changes[0].actor, "admin");
    assert_eq!(changes[0].entity, "line");
    assert_eq!(changes[0].key, "SH-FX");
    assert_eq!(changes[0].before.as_ref().unwrap()["label"], "FX desk");
    assert_eq!(changes[0].after.as_ref().unwrap()["label"], "FX desk (new)");

    // A line still on turrets cannot be deleted; a spare one can.
    let mut w = store.write("admin").await.unwrap();
    assert!(matches!(
        w.delete_line("SH-FX").await,
        Err(Error::Conflict(_))
    ));
    drop(w);
    let mut w = store.write("admin").await.unwrap();
    w.put_line(&Line {
        id: "SPARE".into(),
        kind: LineKind::Intercom,
        number: "7300".into(),
        label: String::new(),
        far_end: None,
    })
    .await
    .unwrap();
    w.delete_line("SPARE").await.unwrap();
    w.commit().await.unwrap();

    // SIP credentials: the store keeps HA1s that match the minted password.
    let mut w = store.write("admin").await.unwrap();
    let cred = w
        .mint_sip_credential("T-0001", "floorwire", Some("trader01"))
        .await
        .unwrap();
    w.commit().await.unwrap();
    let mut w = store.write("admin").await.unwrap();
    assert!(matches!(
        w.mint_sip_credential("T-0099", "floorwire", None).await,
        Err(Error::Conflict(_))
    ));
    drop(w);
    let mut w = store.write("admin").await.unwrap();
    assert!(
        matches!(
            w.mint_sip_credential("T-0001", "floorwire", Some("trader02"))
                .await,
            Err(Error::Conflict(_))
        ),
        "{backend}: another user's turret"
    );
    drop(w);
    let devices = store.device_credentials().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].user, "trader01");
    assert_eq!(
        devices[0].ha1_md5,
        ha1(Algorithm::Md5, &cred.username, "floorwire", &cred.password)
    );
    assert_eq!(
        devices[0].ha1_sha256,
        ha1(
            Algorithm::Sha256,
            &cred.username,
            "floorwire",
            &cred.password
        )
    );

    // A turret handed to another user loses its credential.
    let mut turret = store.turret("T-0001").await.unwrap();
    turret.user = Some("trader02".into());
    let mut w = store.write("admin").await.unwrap();
    w.put_turret(&turret).await.unwrap();
    w.commit().await.unwrap();
    assert!(
        store.device_credentials().await.unwrap().is_empty(),
        "{backend}"
    );

    // Keys compare exactly on every backend (MariaDB's default collation would fold case).
    let mut w = store.write("admin").await.unwrap();
    let shouting = tss::model::User {
        name: "TRADER01".into(),
        display_name: "not trader01".into(),
        role: tss::model::Role::Trader,
        site: "paris".into(),
    };
    w.put_user(&shouting).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(
        store.user("trader01").await.unwrap().display_name,
        "Trader One",
        "{backend}"
    );
    assert_eq!(
        store.user("TRADER01").await.unwrap().display_name,
        "not trader01"
    );
    assert_eq!(store.users().await.unwrap().len(), 4, "{backend}");

    // Call records: stored once however often posted; reports filter.
    let r1 = record("rec-1", "trader01", "+33142685300", "09:00:00", true);
    assert_eq!(
        store.ingest_call_record(&r1).await.unwrap(),
        Ingested::Stored
    );
    assert_eq!(
        store.ingest_call_record(&r1).await.unwrap(),
        Ingested::AlreadyStored
    );
    let r2 = record("rec-2", "trader01", "+441234567890", "10:00:00", false);
    store.ingest_call_record(&r2).await.unwrap();
    let r3 = record("rec-3", "trader02", "+33142685300", "11:00:00", true);
    store.ingest_call_record(&r3).await.unwrap();
    let all = store.call_records(&CallFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3, "{backend}");
    assert_eq!(all[0], r1.clone().with_normalised_times());
    let by = |f: CallFilter| {
        let store = store.clone();
        async move {
            store
                .call_records(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.record_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(CallFilter {
            user: Some("trader01".into()),
            ..Default::default()
        })
        .await,
        ["rec-1", "rec-2"]
    );
    assert_eq!(
        by(CallFilter {
            number: Some("+33142685300".into()),
            ..Default::default()
        })
        .await,
        ["rec-1", "rec-3"]
    );
    assert_eq!(
        by(CallFilter {
            from: Some("2026-11-30T09:30:00Z".into()),
            to: Some("2026-11-30T11:00:00Z".into()),
            ..Default::default()
        })
        .await,
        ["rec-2"]
    );
    let mut bad = r1.clone();
    bad.record_id = "rec-bad".into();
    bad.ended_at = "2026-11-30T08:00:00Z".into();
    assert_eq!(field_of(store.ingest_call_record(&bad).await), "ended_at");

    // A batch is one transaction: one record stored before, one posted twice in it,
    // and more than one statement's worth (64) of new ones.
    let mut batch = vec![r2.clone()];
    for n in 0..130 {
        let start = format!("12:{:02}:{:02}", n / 60, n % 60);
        batch.push(record(
            &format!("batch-{n}"),
            "trader02",
            "7101",
            &start,
            true,
        ));
    }
    batch.push(batch[5].clone());
    let ingested = store.ingest_call_records(&batch).await.unwrap();
    assert_eq!(ingested.len(), 132, "{backend}");
    assert_eq!(ingested[0], Ingested::AlreadyStored, "{backend}");
    assert!(
        ingested[1..131].iter().all(|i| *i == Ingested::Stored),
        "{backend}"
    );
    assert_eq!(ingested[131], Ingested::AlreadyStored, "{backend}");
    let count = |store: Store| async move {
        store
            .call_records(&CallFilter::default())
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count(store.clone()).await, 133, "{backend}");
    // Posted again: every one already there, nothing doubled.
    let again = store.ingest_call_records(&batch).await.unwrap();
    assert!(again.iter().all(|i| *i == Ingested::AlreadyStored));
    assert_eq!(count(store.clone()).await, 133, "{backend}");
    // One invalid record refuses the batch whole, naming it; none of it lands.
    let mut refused = vec![record("batch-new", "trader02", "7101", "13:00:00", true)];
    refused.push(bad.clone());
    assert_eq!(
        field_of(store.ingest_call_records(&refused).await),
        "[1].ended_at"
    );
    assert_eq!(count(store.clone()).await, 133, "{backend}");
    assert!(store.ingest_call_records(&[]).await.unwrap().is_empty());

    // Two TSS on one database take the same records at once (a TPO that posted to
    // one, timed out and posted to the other): both answer, each record is stored once.
    let other = Store::connect(url, 4).await.expect("connect a second TSS");
    let racing: Vec<_> = (0..200)
        .map(|n| {
            let start = format!("14:{:02}:{:02}", n / 60, n % 60);
            record(&format!("race-{n}"), "trader01", "7101", &start, true)
        })
        .collect();
    let (here, there) = tokio::join!(
        store.ingest_call_records(&racing),
        other.ingest_call_records(&racing[50..])
    );
    let stored = |v: &[Ingested]| v.iter().filter(|i| **i == Ingested::Stored).count();
    let (here, there) = (here.unwrap(), there.unwrap());
    assert_eq!(stored(&here) + stored(&there), 200, "{backend}");
    assert_eq!(count(store.clone()).await, 333, "{backend}");
    other.close().await;

    // Writers are serialised: concurrent changes each get their own revision.
    let start = store.revision().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = store.write(&format!("admin{i}")).await?;
            w.put_line(&Line {
                id: format!("CONC-{i}"),
                kind: LineKind::Intercom,
                number: format!("75{i:02}"),
                label: String::new(),
                far_end: None,
            })
            .await?;
            w.commit().await
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap().expect("concurrent write"));
    }
    revisions.sort();
    assert_eq!(
        revisions,
        ((start + 1)..=(start + 8)).collect::<Vec<_>>(),
        "{backend}"
    );
    store.close().await;
}

/// Test-side helper: what a record looks like after a round trip (times in ms).
trait Normalised {
    fn with_normalised_times(self) -> Self;
}

impl Normalised for CallRecord {
    fn with_normalised_times(mut self) -> Self {
        let norm = |t: &str| tss::model::format_time(tss::model::parse_time("t", t).unwrap());
        self.started_at = norm(&self.started_at);
        self.answered_at = self.answered_at.as_deref().map(norm);
        self.ended_at = norm(&self.ended_at);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_behaves_the_same_on_every_backend() {
    let dbs = common::all_backends("store").await;
    for db in dbs {
        eprintln!("store suite on {}", db.backend);
        exercise(db.backend, &db.url).await;
        db.drop_db().await;
    }
}
