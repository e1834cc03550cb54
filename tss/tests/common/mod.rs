//! Test databases on every backend: a fresh SQLite file, and a fresh database on the
//! machine's MariaDB and PostgreSQL (created per test, dropped after). When CI=true a
//! missing server fails the test; elsewhere it is skipped with a note on stderr.

#![allow(dead_code)] // each test file uses a subset

pub mod slapd;

use sqlx::Connection;

/// Server URLs the tests create their databases on (overridable).
fn admin_url(backend: &str) -> String {
    match backend {
        "mysql" => std::env::var("TSS_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
        _ => std::env::var("TSS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    }
}

/// One test database.
pub struct TestDb {
    pub backend: &'static str,
    pub url: String,
    name: Option<String>,
    _dir: Option<TempDir>,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "floorwire-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Every backend reachable here: SQLite always; MariaDB and PostgreSQL when their
/// servers answer (under CI they must).
pub async fn all_backends(tag: &str) -> Vec<TestDb> {
    sqlx::any::install_default_drivers();
    let dir = TempDir::new(tag);
    let sqlite = format!("sqlite://{}?mode=rwc", dir.0.join("tss.sqlite3").display());
    let mut dbs = vec![TestDb {
        backend: "sqlite",
        url: sqlite,
        name: None,
        _dir: Some(dir),
    }];
    for backend in ["mysql", "postgres"] {
        match create(backend, tag).await {
            Ok(db) => dbs.push(db),
            Err(e) if in_ci() => panic!("{backend} is required under CI=true and failed: {e}"),
            Err(e) => eprintln!("SKIPPED {backend} for {tag}: {e}"),
        }
    }
    dbs
}

async fn create(backend: &'static str, tag: &str) -> Result<TestDb, sqlx::Error> {
    let admin = admin_url(backend);
    let name = format!(
        "tss_{tag}_{}_{:x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let mut conn = sqlx::AnyConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Ok(TestDb {
        backend,
        url: format!("{base}/{name}"),
        name: Some(name),
        _dir: None,
    })
}

impl TestDb {
    /// Drops the database (call at the end of the test; SQLite files go with the dir).
    pub async fn drop_db(self) {
        let Some(name) = &self.name else { return };
        let sql = match self.backend {
            "postgres" => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS {name}"),
        };
        if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url(self.backend)).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}
