//! The profile store over sqlx's `Any` driver: SQLite (embedded default),
//! MariaDB/MySQL or PostgreSQL, chosen by the URL alone.
//!
//! Every change goes through a [`Write`]: one database transaction that takes the next
//! store revision first (serialising writers on every backend), records each change
//! with who and when in `changes`, re-renders the profile of every user it touched and
//! stores a new profile version where the document changed, then commits — or, on any
//! error, rolls back whole. **Invariant:** nothing writes to the store outside a `Write`.
//!
//! Queries are written with `?` placeholders; [`Store::sql`] numbers them (`$1`…) for
//! PostgreSQL, since the `Any` driver passes SQL through untouched.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row, Transaction};

use crate::error::{Error, Result};
use crate::model::{
    AccessRight, Appearance, CallRecord, CivicAddress, DialPlanRule, Direction, Line, LineKind,
    Outcome, ProfileEdit, Role, Route, Site, SoftwarePackage, SoftwareRef, SpeakerChannel,
    SpeedDial, Turret, User, format_time, invalid, now_ms,
};
use crate::profile::{self, ProfileDocument, ProfileParts};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

impl Backend {
    /// The backend of a database URL (`sqlite:`, `mysql:`/`mariadb:`, `postgres:`/`postgresql:`).
    pub fn of_url(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::Config(format!(
                "store.url: scheme {scheme:?} is not sqlite, mysql, mariadb, postgres or postgresql"
            ))),
        }
    }

    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => &SQLITE,
            Backend::MySql => &MYSQL,
            Backend::Postgres => &POSTGRES,
        }
    }
}

/// Numbers `?` placeholders as `$1, $2, …` (PostgreSQL); our SQL has no `?` in literals.
fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A handle on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: sqlx::AnyPool,
    backend: Backend,
}

/// What one [`Write`] changed, as recorded in `changes`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub revision: i64,
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub entity: String,
    pub key: String,
    pub action: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// One stored version of a user's profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProfileVersion {
    pub version: i64,
    pub revision: i64,
    pub at: String,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
}

/// A freshly minted SIP credential; the password exists only here, the store keeps HA1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SipCredential {
    pub username: String,
    pub password: String,
    pub realm: String,
}

/// A device credential as TPOs get it: HA1 only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceCredential {
    pub username: String,
    pub device_id: String,
    pub user: String,
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

/// Whether an ingested call record was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored,
    AlreadyStored,
}

/// Which call records a report covers; every field optional.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFilter {
    pub user: Option<String>,
    pub line: Option<String>,
    /// Matches the calling or the called number.
    pub number: Option<String>,
    /// RFC 3339; calls that started at or after.
    pub from: Option<String>,
    /// RFC 3339; calls that started before.
    pub to: Option<String>,
    pub limit: Option<u32>,
}

fn text(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(col)?)
}

fn opt_text(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

fn u32_of(row: &AnyRow, col: &str) -> Result<u32> {
    u32::try_from(int(row, col)?).map_err(|_| Error::Config(format!("stored {col} out of range")))
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn site_of(row: &AnyRow) -> Result<Site> {
    let list = |col: &str| -> Result<Vec<String>> {
        serde_json::from_str(&text(row, col)?)
            .map_err(|e| Error::Config(format!("stored sites.{col}: {e}")))
    };
    Ok(Site {
        name: text(row, "name")?,
        description: text(row, "description")?,
        civic_address: serde_json::from_str::<CivicAddress>(&text(row, "civic_address")?)
            .map_err(|e| Error::Config(format!("stored sites.civic_address: {e}")))?,
        tpos: list("tpos")?,
        recorders: list("recorders")?,
    })
}

fn user_of(row: &AnyRow) -> Result<User> {
    Ok(User {
        name: text(row, "name")?,
        display_name: text(row, "display_name")?,
        role: Role::parse("role", &text(row, "role")?)?,
        site: text(row, "site")?,
    })
}

fn line_of(row: &AnyRow) -> Result<Line> {
    Ok(Line {
        id: text(row, "id")?,
        kind: LineKind::parse("kind", &text(row, "kind")?)?,
        number: text(row, "number")?,
        label: text(row, "label")?,
        far_end: opt_text(row, "far_end")?,
    })
}

fn turret_of(row: &AnyRow) -> Result<Turret> {
    let software = match (
        opt_text(row, "software_package")?,
        opt_text(row, "software_version")?,
    ) {
        (Some(package), Some(version)) => Some(SoftwareRef { package, version }),
        _ => None,
    };
    Ok(Turret {
        device_id: text(row, "device_id")?,
        user: opt_text(row, "user_name")?,
        model: text(row, "model")?,
        site: text(row, "site")?,
        software,
    })
}

fn package_of(row: &AnyRow) -> Result<SoftwarePackage> {
    Ok(SoftwarePackage {
        name: text(row, "name")?,
        version: text(row, "version")?,
        file_name: text(row, "file_name")?,
        sha256: text(row, "sha256")?,
        size: u64::try_from(int(row, "size")?).unwrap_or(0),
    })
}

fn call_record_of(row: &AnyRow) -> Result<CallRecord> {
    Ok(CallRecord {
        record_id: text(row, "record_id")?,
        tpo: text(row, "tpo")?,
        call_id: text(row, "call_id")?,
        user: opt_text(row, "user_name")?,
        line: opt_text(row, "line_id")?,
        direction: Direction::parse("direction", &text(row, "direction")?)?,
        calling: text(row, "calling")?,
        called: text(row, "called")?,
        started_at: format_time(int(row, "started_at")?),
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at")?
            .map(format_time),
        ended_at: format_time(int(row, "ended_at")?),
        outcome: Outcome::parse("outcome", &text(row, "outcome")?)?,
        recordings: serde_json::from_str(&text(row, "recordings")?).unwrap_or_default(),
    })
}

const SITE_COLS: &str = "name, description, civic_address, tpos, recorders";
const USER_COLS: &str = "name, display_name, role, site";
const LINE_COLS: &str = "id, kind, number, label, far_end";
const TURRET_COLS: &str = "device_id, user_name, model, site, software_package, software_version";
const PACKAGE_COLS: &str = "name, version, file_name, sha256, size";
const CALL_COLS: &str = "record_id, tpo, call_id, user_name, line_id, direction, calling, called, started_at, answered_at, ended_at, outcome, recordings";

impl Store {
    /// Connects to `url` (the backend follows from the scheme). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let backend = Backend::of_url(url)?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Store { pool, backend })
    }

    /// Applies this backend's pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The SQL for this backend (`?` numbered for PostgreSQL).
    fn sql(&self, sql: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(match self.backend {
            Backend::Postgres => number_placeholders(sql),
            Backend::Sqlite | Backend::MySql => sql.to_owned(),
        })
    }

    /// The store revision: bumped by every committed change.
    pub async fn revision(&self) -> Result<i64> {
        let row = sqlx::query(self.sql("SELECT revision FROM store_revision WHERE id = 1"))
            .fetch_one(&self.pool)
            .await?;
        int(&row, "revision")
    }

    /// Starts a change by `actor`.
    pub async fn write(&self, actor: &str) -> Result<Write<'_>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(self.sql("UPDATE store_revision SET revision = revision + 1 WHERE id = 1"))
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(self.sql("SELECT revision FROM store_revision WHERE id = 1"))
            .fetch_one(&mut *tx)
            .await?;
        let revision = int(&row, "revision")?;
        Ok(Write {
            store: self,
            tx,
            revision,
            at: now_ms(),
            actor: actor.to_owned(),
            changes: Vec::new(),
            touched_users: BTreeSet::new(),
        })
    }

    // ---- reads -------------------------------------------------------------------

    /// Every row `sql` selects, mapped.
    async fn all<T>(&self, sql: &str, map: fn(&AnyRow) -> Result<T>) -> Result<Vec<T>> {
        let rows = sqlx::query(self.sql(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(map).collect()
    }

    /// The row `sql` (one `?`, bound to `key`) selects on `conn`, if any, mapped.
    async fn one_in<T>(
        &self,
        conn: &mut AnyConnection,
        sql: &str,
        key: &str,
        map: fn(&AnyRow) -> Result<T>,
    ) -> Result<Option<T>> {
        let row = sqlx::query(self.sql(sql))
            .bind(key)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(map).transpose()
    }

    pub async fn sites(&self) -> Result<Vec<Site>> {
        self.all(
            &format!("SELECT {SITE_COLS} FROM sites ORDER BY name"),
            site_of,
        )
        .await
    }

    pub async fn site(&self, name: &str) -> Result<Site> {
        let mut conn = self.pool.acquire().await?;
        self.site_in(&mut conn, name)
            .await?
            .ok_or_else(|| not_found("site", name))
    }

    async fn site_in(&self, conn: &mut AnyConnection, name: &str) -> Result<Option<Site>> {
        self.one_in(
            conn,
            &format!("SELECT {SITE_COLS} FROM sites WHERE name = ?"),
            name,
            site_of,
        )
        .await
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        self.all(
            &format!("SELECT {USER_COLS} FROM users ORDER BY name"),
            user_of,
        )
        .await
    }

    pub async fn user(&self, name: &str) -> Result<User> {
        let mut conn = self.pool.acquire().await?;
        self.user_in(&mut conn, name)
            .await?
            .ok_or_else(|| not_found("user", name))
    }

    async fn user_in(&self, conn: &mut AnyConnection, name: &str) -> Result<Option<User>> {
        self.one_in(
            conn,
            &format!("SELECT {USER_COLS} FROM users WHERE name = ?"),
            name,
            user_of,
        )
        .await
    }

    /// The stored argon2 hash of an embedded-directory user, if any.
    pub async fn password_hash(&self, name: &str) -> Result<Option<(String, Role)>> {
        let row = sqlx::query(self.sql("SELECT password_hash, role FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let Some(hash) = opt_text(&row, "password_hash")? else {
            return Ok(None);
        };
        Ok(Some((hash, Role::parse("role", &text(&row, "role")?)?)))
    }

    pub async fn lines(&self) -> Result<Vec<Line>> {
        self.all(
            &format!("SELECT {LINE_COLS} FROM turret_lines ORDER BY id"),
            line_of,
        )
        .await
    }

    pub async fn line(&self, id: &str) -> Result<Line> {
        let mut conn = self.pool.acquire().await?;
        self.line_in(&mut conn, id)
            .await?
            .ok_or_else(|| not_found("line", id))
    }

    async fn line_in(&self, conn: &mut AnyConnection, id: &str) -> Result<Option<Line>> {
        self.one_in(
            conn,
            &format!("SELECT {LINE_COLS} FROM turret_lines WHERE id = ?"),
            id,
            line_of,
        )
        .await
    }

    /// Every appearance: (user, appearance), by user then button.
    pub async fn appearances(&self) -> Result<Vec<(String, Appearance)>> {
        let rows = sqlx::query(self.sql(
            "SELECT user_name, line_id, access_right, button FROM appearances ORDER BY user_name, button",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    text(r, "user_name")?,
                    Appearance {
                        line: text(r, "line_id")?,
                        access: AccessRight::parse("access", &text(r, "access_right")?)?,
                        button: u32_of(r, "button")?,
                    },
                ))
            })
            .collect()
    }

    /// The editable part of a user's profile.
    pub async fn profile_edit(&self, user: &str) -> Result<ProfileEdit> {
        let mut conn = self.pool.acquire().await?;
        if self.user_in(&mut conn, user).await?.is_none() {
            return Err(not_found("user", user));
        }
        self.profile_edit_in(&mut conn, user).await
    }

    async fn profile_edit_in(&self, conn: &mut AnyConnection, user: &str) -> Result<ProfileEdit> {
        let rows = sqlx::query(self.sql(
            "SELECT line_id, access_right, button FROM appearances WHERE user_name = ? ORDER BY button",
        ))
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        let appearances = rows
            .iter()
            .map(|r| {
                Ok(Appearance {
                    line: text(r, "line_id")?,
                    access: AccessRight::parse("access", &text(r, "access_right")?)?,
                    button: u32_of(r, "button")?,
                })
            })
            .collect::<Result<_>>()?;
        let rows = sqlx::query(self.sql(
            "SELECT channel, line_id FROM speaker_channels WHERE user_name = ? ORDER BY channel",
        ))
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        let speaker_channels = rows
            .iter()
            .map(|r| {
                Ok(SpeakerChannel {
                    channel: u32_of(r, "channel")?,
                    line: text(r, "line_id")?,
                })
            })
            .collect::<Result<_>>()?;
        let rows = sqlx::query(self.sql(
            "SELECT position, label, number FROM speed_dials WHERE user_name = ? ORDER BY position",
        ))
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        let speed_dials = rows
            .iter()
            .map(|r| {
                Ok(SpeedDial {
                    position: u32_of(r, "position")?,
                    label: text(r, "label")?,
                    number: text(r, "number")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(ProfileEdit {
            appearances,
            speaker_channels,
            speed_dials,
        })
    }

    pub async fn turrets(&self) -> Result<Vec<Turret>> {
        self.all(
            &format!("SELECT {TURRET_COLS} FROM turrets ORDER BY device_id"),
            turret_of,
        )
        .await
    }

    pub async fn turret(&self, device_id: &str) -> Result<Turret> {
        let mut conn = self.pool.acquire().await?;
        self.turret_in(&mut conn, device_id)
            .await?
            .ok_or_else(|| not_found("turret", device_id))
    }

    async fn turret_in(&self, conn: &mut AnyConnection, device_id: &str) -> Result<Option<Turret>> {
        self.one_in(
            conn,
            &format!("SELECT {TURRET_COLS} FROM turrets WHERE device_id = ?"),
            device_id,
            turret_of,
        )
        .await
    }

    pub async fn packages(&self) -> Result<Vec<SoftwarePackage>> {
        self.all(
            &format!("SELECT {PACKAGE_COLS} FROM software_packages ORDER BY name, version"),
            package_of,
        )
        .await
    }

    async fn package_in(
        &self,
        conn: &mut AnyConnection,
        name: &str,
        version: &str,
    ) -> Result<Option<SoftwarePackage>> {
        let sql =
            format!("SELECT {PACKAGE_COLS} FROM software_packages WHERE name = ? AND version = ?");
        let row = sqlx::query(self.sql(&sql))
            .bind(name)
            .bind(version)
            .fetch_optional(conn)
            .await?;
        row.as_ref().map(package_of).transpose()
    }

    pub async fn dial_plan(&self) -> Result<Vec<DialPlanRule>> {
        let rows = sqlx::query(
            self.sql("SELECT prefix, route, description FROM dial_plan ORDER BY position"),
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DialPlanRule {
                    prefix: text(r, "prefix")?,
                    route: Route::parse("route", &text(r, "route")?)?,
                    description: text(r, "description")?,
                })
            })
            .collect()
    }

    /// Every device credential (HA1 only), for TPOs.
    pub async fn device_credentials(&self) -> Result<Vec<DeviceCredential>> {
        let rows = sqlx::query(self.sql(
            "SELECT username, device_id, user_name, realm, ha1_md5, ha1_sha256 FROM sip_credentials ORDER BY username",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceCredential {
                    username: text(r, "username")?,
                    device_id: text(r, "device_id")?,
                    user: text(r, "user_name")?,
                    realm: text(r, "realm")?,
                    ha1_md5: text(r, "ha1_md5")?,
                    ha1_sha256: text(r, "ha1_sha256")?,
                })
            })
            .collect()
    }

    /// A user's current profile document.
    pub async fn profile_document(&self, user: &str) -> Result<ProfileDocument> {
        let mut conn = self.pool.acquire().await?;
        self.render_in(&mut conn, user)
            .await?
            .ok_or_else(|| not_found("user", user))
    }

    async fn render_in(
        &self,
        conn: &mut AnyConnection,
        user: &str,
    ) -> Result<Option<ProfileDocument>> {
        let Some(user) = self.user_in(&mut *conn, user).await? else {
            return Ok(None);
        };
        let site = self
            .site_in(&mut *conn, &user.site)
            .await?
            .ok_or_else(|| not_found("site", &user.site))?;
        let edit = self.profile_edit_in(&mut *conn, &user.name).await?;
        let mut appearances = Vec::with_capacity(edit.appearances.len());
        for a in &edit.appearances {
            if let Some(line) = self.line_in(&mut *conn, &a.line).await? {
                appearances.push((a.button, a.access, line));
            }
        }
        let sql = format!("SELECT {TURRET_COLS} FROM turrets WHERE user_name = ?");
        let rows = sqlx::query(self.sql(&sql))
            .bind(&user.name)
            .fetch_all(&mut *conn)
            .await?;
        let mut turrets = Vec::with_capacity(rows.len());
        for row in &rows {
            let turret = turret_of(row)?;
            let package = match &turret.software {
                Some(sw) => {
                    self.package_in(&mut *conn, &sw.package, &sw.version)
                        .await?
                }
                None => None,
            };
            turrets.push((turret, package));
        }
        Ok(Some(profile::render(ProfileParts {
            user,
            site,
            appearances,
            speaker_channels: edit.speaker_channels,
            speed_dials: edit.speed_dials,
            turrets,
        })))
    }

    /// A user's stored profile versions, newest last (documents left out).
    pub async fn profile_versions(&self, user: &str) -> Result<Vec<ProfileVersion>> {
        let rows = sqlx::query(self.sql(
            "SELECT version, revision, at, actor FROM profile_versions WHERE user_name = ? ORDER BY version",
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(not_found("profile of user", user));
        }
        rows.iter()
            .map(|r| {
                Ok(ProfileVersion {
                    version: int(r, "version")?,
                    revision: int(r, "revision")?,
                    at: format_time(int(r, "at")?),
                    actor: text(r, "actor")?,
                    document: None,
                })
            })
            .collect()
    }

    /// One stored version of a user's profile (the latest when `version` is `None`).
    pub async fn profile_version(
        &self,
        user: &str,
        version: Option<i64>,
    ) -> Result<ProfileVersion> {
        let row = match version {
            Some(v) => sqlx::query(self.sql(
                "SELECT version, revision, at, actor, document FROM profile_versions WHERE user_name = ? AND version = ?",
            ))
            .bind(user)
            .bind(v)
            .fetch_optional(&self.pool)
            .await?,
            None => sqlx::query(self.sql(
                "SELECT version, revision, at, actor, document FROM profile_versions WHERE user_name = ? ORDER BY version DESC LIMIT 1",
            ))
            .bind(user)
            .fetch_optional(&self.pool)
            .await?,
        };
        let row = row.ok_or_else(|| match version {
            Some(v) => not_found("profile version", &format!("{user}@{v}")),
            None => not_found("profile of user", user),
        })?;
        let document = serde_json::from_str(&text(&row, "document")?)
            .map_err(|e| Error::Config(format!("stored profile document: {e}")))?;
        Ok(ProfileVersion {
            version: int(&row, "version")?,
            revision: int(&row, "revision")?,
            at: format_time(int(&row, "at")?),
            actor: text(&row, "actor")?,
            document: Some(document),
        })
    }

    /// The audit trail after revision `since`, oldest first, at most `limit` entries.
    pub async fn changes(&self, since: i64, limit: u32) -> Result<Vec<Change>> {
        let sql = format!(
            "SELECT revision, seq, at, actor, entity, entity_key, action, before_doc, after_doc \
             FROM changes WHERE revision > ? ORDER BY revision, seq LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = sqlx::query(self.sql(&sql))
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        let doc = |r: &AnyRow, col: &str| -> Result<Option<Value>> {
            Ok(opt_text(r, col)?.and_then(|t| serde_json::from_str(&t).ok()))
        };
        rows.iter()
            .map(|r| {
                Ok(Change {
                    revision: int(r, "revision")?,
                    seq: int(r, "seq")?,
                    at: format_time(int(r, "at")?),
                    actor: text(r, "actor")?,
                    entity: text(r, "entity")?,
                    key: text(r, "entity_key")?,
                    action: text(r, "action")?,
                    before: doc(r, "before_doc")?,
                    after: doc(r, "after_doc")?,
                })
            })
            .collect()
    }

    /// Stores a call record once: a record whose `record_id` is already stored is
    /// acknowledged without a second copy (also when two TSS race on one database).
    pub async fn ingest_call_record(&self, record: &CallRecord) -> Result<Ingested> {
        let times = record.validate()?;
        let ingested = self
            .store_call_records(std::slice::from_ref(record), &[times])
            .await?;
        Ok(ingested[0])
    }

    /// Stores several call records, each once, in one transaction: all of them or, on
    /// a failure, none (posting them again is safe). A record refused by
    /// [`CallRecord::validate`] refuses the whole call, its field named `[i].field`.
    /// One commit a batch instead of one a record: what lets a TSS keep up with a
    /// TPO's call rate (docs/benchmarks.md, "Call-record ingest").
    pub async fn ingest_call_records(&self, records: &[CallRecord]) -> Result<Vec<Ingested>> {
        let times = records
            .iter()
            .enumerate()
            .map(|(i, record)| {
                record.validate().map_err(|e| match e {
                    Error::Invalid { field, reason } => Error::Invalid {
                        field: format!("[{i}].{field}"),
                        reason,
                    },
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.store_call_records(records, &times).await
    }

    /// [`Self::ingest_call_records`] of records already validated (`times` from
    /// [`CallRecord::validate`], one entry a record): for a caller that checked them
    /// itself, so that they are not checked twice.
    pub(crate) async fn store_call_records(
        &self,
        records: &[CallRecord],
        times: &[(i64, Option<i64>, i64)],
    ) -> Result<Vec<Ingested>> {
        /// Ids looked up, rows inserted, a statement: well under every backend's limit
        /// of bound values (14 a row).
        const CHUNK: usize = 64;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // Writers of call records take turns, here and on another TSS sharing the
        // database: each finds what the one before committed, so two never insert one
        // record (a unique-key failure), and SQLite never has two readers both waiting
        // to write. The revision stays as it is: a call record is not a profile change.
        sqlx::query(self.sql("UPDATE store_revision SET revision = revision WHERE id = 1"))
            .execute(&mut *tx)
            .await?;
        if self.backend == Backend::Postgres {
            // PostgreSQL would keep the plan it made for the first lookups, made while
            // the table was near empty (a scan of it), for as long as the connection
            // lives: at 40,000 records a batch took 140 ms. Planned afresh, each lookup
            // goes through the key's index.
            sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
                .execute(&mut *tx)
                .await?;
        }
        let mut stored = HashSet::new();
        for chunk in records.chunks(CHUNK) {
            let sql = format!(
                "SELECT record_id FROM call_records WHERE record_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query(self.sql(&sql));
            for record in chunk {
                query = query.bind(&record.record_id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                stored.insert(row.try_get::<String, _>("record_id")?);
            }
        }
        // A record posted twice in one batch is stored once too.
        let mut ingested = Vec::with_capacity(records.len());
        let mut fresh = Vec::new();
        for (record, times) in records.iter().zip(times) {
            if stored.insert(record.record_id.clone()) {
                fresh.push((record, times));
                ingested.push(Ingested::Stored);
            } else {
                ingested.push(Ingested::AlreadyStored);
            }
        }
        let received = now_ms();
        let row = format!("({})", vec!["?"; 14].join(", "));
        for chunk in fresh.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO call_records ({CALL_COLS}, received_at) VALUES {}",
                vec![row.as_str(); chunk.len()].join(", ")
            );
            let mut query = sqlx::query(self.sql(&sql));
            for &(record, &(started, answered, ended)) in chunk {
                query = query
                    .bind(&record.record_id)
                    .bind(&record.tpo)
                    .bind(&record.call_id)
                    .bind(record.user.as_deref())
                    .bind(record.line.as_deref())
                    .bind(record.direction.as_str())
                    .bind(&record.calling)
                    .bind(&record.called)
                    .bind(started)
                    .bind(answered)
                    .bind(ended)
                    .bind(record.outcome.as_str())
                    .bind(serde_json::to_string(&record.recordings).unwrap_or_else(|_| "[]".into()))
                    .bind(received);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ingested)
    }

    /// Call records matching `filter`, oldest first.
    pub async fn call_records(&self, filter: &CallFilter) -> Result<Vec<CallRecord>> {
        let mut sql = format!("SELECT {CALL_COLS} FROM call_records WHERE 1 = 1");
        let mut texts: Vec<String> = Vec::new();
        let mut times: Vec<i64> = Vec::new();
        // Text binds first, then times: the SQL is built in the same order.
        if let Some(u) = &filter.user {
            sql.push_str(" AND user_name = ?");
            texts.push(u.clone());
        }
        if let Some(l) = &filter.line {
            sql.push_str(" AND line_id = ?");
            texts.push(l.clone());
        }
        if let Some(n) = &filter.number {
            sql.push_str(" AND (calling = ? OR called = ?)");
            texts.push(n.clone());
            texts.push(n.clone());
        }
        if let Some(from) = &filter.from {
            sql.push_str(" AND started_at >= ?");
            times.push(crate::model::parse_time("from", from)?);
        }
        if let Some(to) = &filter.to {
            sql.push_str(" AND started_at < ?");
            times.push(crate::model::parse_time("to", to)?);
        }
        let limit = filter.limit.unwrap_or(10_000).clamp(1, 100_000);
        sql.push_str(&format!(" ORDER BY started_at, record_id LIMIT {limit}"));
        let sql = self.sql(&sql);
        let mut query = sqlx::query(sql);
        for t in texts {
            query = query.bind(t);
        }
        for t in times {
            query = query.bind(t);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(call_record_of).collect()
    }
}

fn not_found(what: &str, key: &str) -> Error {
    Error::NotFound {
        what: format!("{what} {key:?}"),
    }
}

/// A change recorded by a [`Write`] before commit: entity, key, action, before, after.
type PendingChange = (String, String, &'static str, Option<Value>, Option<Value>);

/// One change to the store, applied whole by [`Write::commit`] or not at all.
#[derive(Debug)]
pub struct Write<'s> {
    store: &'s Store,
    tx: Transaction<'static, Any>,
    revision: i64,
    at: i64,
    actor: String,
    changes: Vec<PendingChange>,
    touched_users: BTreeSet<String>,
}

impl Write<'_> {
    fn sql(&self, sql: &str) -> AssertSqlSafe<String> {
        self.store.sql(sql)
    }

    /// Records a create or update of `after` (`before`: what was stored).
    fn record_put<T: serde::Serialize>(
        &mut self,
        entity: &str,
        key: &str,
        before: Option<T>,
        after: &T,
    ) {
        self.record(
            entity,
            key,
            before.map(|b| json_of(&b)),
            Some(json_of(after)),
        );
    }

    fn record(&mut self, entity: &str, key: &str, before: Option<Value>, after: Option<Value>) {
        let action = match (&before, &after) {
            (None, Some(_)) => "create",
            (Some(_), None) => "delete",
            _ => "update",
        };
        self.changes
            .push((entity.to_owned(), key.to_owned(), action, before, after));
    }

    async fn exec(&mut self, sql: &str, binds: Vec<Bind>) -> Result<u64> {
        let sql = self.sql(sql);
        let mut query = sqlx::query(sql);
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::OptText(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        Ok(query.execute(&mut *self.tx).await?.rows_affected())
    }

    /// `UPDATE` when the row exists, else `INSERT`, with the same binds.
    async fn upsert(
        &mut self,
        exists: bool,
        update: &str,
        insert: &str,
        binds: Vec<Bind>,
    ) -> Result<u64> {
        self.exec(if exists { update } else { insert }, binds).await
    }

    /// Marks the users `sql` (one `?`, a `user_name` column) selects as touched: their
    /// profiles are re-rendered at commit.
    async fn touch_users_where(&mut self, sql: &str, key: &str) -> Result<()> {
        for user in self.users_where(sql, key).await? {
            self.touched_users.insert(user);
        }
        Ok(())
    }

    async fn users_where(&mut self, sql: &str, key: &str) -> Result<Vec<String>> {
        let sql = self.sql(sql);
        let rows = sqlx::query(sql).bind(key).fetch_all(&mut *self.tx).await?;
        rows.iter().map(|r| text(r, "user_name")).collect()
    }

    /// Creates or replaces a site.
    pub async fn put_site(&mut self, site: &Site) -> Result<()> {
        site.validate()?;
        let before = self.store.site_in(&mut self.tx, &site.name).await?;
        if before.as_ref() == Some(site) {
            return Ok(());
        }
        let list = |l: &Vec<String>| serde_json::to_string(l).unwrap_or_else(|_| "[]".into());
        let civic = serde_json::to_string(&site.civic_address).unwrap_or_else(|_| "{}".into());
        let binds = vec![
            Bind::Text(site.description.clone()),
            Bind::Text(civic),
            Bind::Text(list(&site.tpos)),
            Bind::Text(list(&site.recorders)),
            Bind::Text(site.name.clone()),
        ];
        self.upsert(before.is_some(), "UPDATE sites SET description = ?, civic_address = ?, tpos = ?, recorders = ? WHERE name = ?", "INSERT INTO sites (description, civic_address, tpos, recorders, name) VALUES (?, ?, ?, ?, ?)", binds)
            .await?;
        self.touch_users_where(
            "SELECT name AS user_name FROM users WHERE site = ?",
            &site.name,
        )
        .await?;
        self.record_put("site", &site.name, before, site);
        Ok(())
    }

    /// Deletes a site no user or turret uses.
    pub async fn delete_site(&mut self, name: &str) -> Result<()> {
        let before = self
            .store
            .site_in(&mut self.tx, name)
            .await?
            .ok_or_else(|| not_found("site", name))?;
        let users = self
            .users_where("SELECT name AS user_name FROM users WHERE site = ?", name)
            .await?;
        let turrets = self
            .users_where(
                "SELECT device_id AS user_name FROM turrets WHERE site = ?",
                name,
            )
            .await?;
        if !users.is_empty() || !turrets.is_empty() {
            return Err(Error::Conflict(format!(
                "site {name:?} is used by users {users:?} and turrets {turrets:?}"
            )));
        }
        self.exec(
            "DELETE FROM sites WHERE name = ?",
            vec![Bind::Text(name.to_owned())],
        )
        .await?;
        self.record("site", name, Some(json_of(&before)), None);
        Ok(())
    }

    /// Creates or replaces a user (their profile edit is kept).
    pub async fn put_user(&mut self, user: &User) -> Result<()> {
        user.validate()?;
        if self
            .store
            .site_in(&mut self.tx, &user.site)
            .await?
            .is_none()
        {
            return Err(invalid("site", format!("no site {:?}", user.site)));
        }
        let before = self.store.user_in(&mut self.tx, &user.name).await?;
        if before.as_ref() == Some(user) {
            return Ok(());
        }
        let binds = vec![
            Bind::Text(user.display_name.clone()),
            Bind::Text(user.role.as_str().to_owned()),
            Bind::Text(user.site.clone()),
            Bind::Text(user.name.clone()),
        ];
        self.upsert(
            before.is_some(),
            "UPDATE users SET display_name = ?, role = ?, site = ? WHERE name = ?",
            "INSERT INTO users (display_name, role, site, name) VALUES (?, ?, ?, ?)",
            binds,
        )
        .await?;
        self.touched_users.insert(user.name.clone());
        self.record_put("user", &user.name, before, user);
        Ok(())
    }

    /// Sets (or with `None` clears) an embedded-directory user's argon2 hash.
    pub async fn set_password_hash(&mut self, user: &str, hash: Option<&str>) -> Result<()> {
        let n = self
            .exec(
                "UPDATE users SET password_hash = ? WHERE name = ?",
                vec![
                    Bind::OptText(hash.map(str::to_owned)),
                    Bind::Text(user.to_owned()),
                ],
            )
            .await?;
        if n == 0 {
            return Err(not_found("user", user));
        }
        let after = serde_json::json!({"password": if hash.is_some() { "set" } else { "cleared" }});
        self.record("password", user, None, Some(after));
        Ok(())
    }

    /// Deletes a user with their appearances, layout, speed dials and SIP credentials;
    /// their turrets become spare. Profile versions stay as history.
    pub async fn delete_user(&mut self, name: &str) -> Result<()> {
        let before = self
            .store
            .user_in(&mut self.tx, name)
            .await?
            .ok_or_else(|| not_found("user", name))?;
        for table in [
            "appearances",
            "speaker_channels",
            "speed_dials",
            "sip_credentials",
        ] {
            self.exec(
                &format!("DELETE FROM {table} WHERE user_name = ?"),
                vec![Bind::Text(name.to_owned())],
            )
            .await?;
        }
        self.exec(
            "UPDATE turrets SET user_name = NULL WHERE user_name = ?",
            vec![Bind::Text(name.to_owned())],
        )
        .await?;
        self.exec(
            "DELETE FROM users WHERE name = ?",
            vec![Bind::Text(name.to_owned())],
        )
        .await?;
        self.record("user", name, Some(json_of(&before)), None);
        Ok(())
    }

    /// Creates or replaces a line; a line's kind may not change under appearances
    /// that would lose meaning (none do today), so any edit is allowed.
    pub async fn put_line(&mut self, line: &Line) -> Result<()> {
        line.validate()?;
        let before = self.store.line_in(&mut self.tx, &line.id).await?;
        if before.as_ref() == Some(line) {
            return Ok(());
        }
        let binds = vec![
            Bind::Text(line.kind.as_str().to_owned()),
            Bind::Text(line.number.clone()),
            Bind::Text(line.label.clone()),
            Bind::OptText(line.far_end.clone()),
            Bind::Text(line.id.clone()),
        ];
        self.upsert(
            before.is_some(),
            "UPDATE turret_lines SET kind = ?, number = ?, label = ?, far_end = ? WHERE id = ?",
            "INSERT INTO turret_lines (kind, number, label, far_end, id) VALUES (?, ?, ?, ?, ?)",
            binds,
        )
        .await?;
        self.touch_users_where(
            "SELECT user_name FROM appearances WHERE line_id = ?",
            &line.id,
        )
        .await?;
        self.record_put("line", &line.id, before, line);
        Ok(())
    }

    /// Deletes a line that appears on no turret.
    pub async fn delete_line(&mut self, id: &str) -> Result<()> {
        let before = self
            .store
            .line_in(&mut self.tx, id)
            .await?
            .ok_or_else(|| not_found("line", id))?;
        let users = self
            .users_where("SELECT user_name FROM appearances WHERE line_id = ?", id)
            .await?;
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "line {id:?} still appears on {users:?}: remove those appearances first"
            )));
        }
        self.exec(
            "DELETE FROM turret_lines WHERE id = ?",
            vec![Bind::Text(id.to_owned())],
        )
        .await?;
        self.record("line", id, Some(json_of(&before)), None);
        Ok(())
    }

    /// Replaces a user's appearances, speaker layout and speed dials, validated whole.
    pub async fn put_profile(&mut self, user: &str, edit: &ProfileEdit) -> Result<()> {
        if self.store.user_in(&mut self.tx, user).await?.is_none() {
            return Err(not_found("user", user));
        }
        let mut lines = BTreeMap::new();
        for a in &edit.appearances {
            if !lines.contains_key(&a.line) {
                let found = self.store.line_in(&mut self.tx, &a.line).await?.is_some();
                lines.insert(a.line.clone(), found);
            }
        }
        edit.validate(|id| lines.get(id).copied().unwrap_or(false))?;
        let before = self.store.profile_edit_in(&mut self.tx, user).await?;
        if &before == edit {
            return Ok(());
        }
        for table in ["appearances", "speaker_channels", "speed_dials"] {
            self.exec(
                &format!("DELETE FROM {table} WHERE user_name = ?"),
                vec![Bind::Text(user.to_owned())],
            )
            .await?;
        }
        for a in &edit.appearances {
            self.exec(
                "INSERT INTO appearances (user_name, line_id, access_right, button) VALUES (?, ?, ?, ?)",
                vec![
                    Bind::Text(user.to_owned()),
                    Bind::Text(a.line.clone()),
                    Bind::Text(a.access.as_str().to_owned()),
                    Bind::Int(i64::from(a.button)),
                ],
            )
            .await?;
        }
        for c in &edit.speaker_channels {
            self.exec(
                "INSERT INTO speaker_channels (user_name, channel, line_id) VALUES (?, ?, ?)",
                vec![
                    Bind::Text(user.to_owned()),
                    Bind::Int(i64::from(c.channel)),
                    Bind::Text(c.line.clone()),
                ],
            )
            .await?;
        }
        for d in &edit.speed_dials {
            self.exec(
                "INSERT INTO speed_dials (user_name, position, label, number) VALUES (?, ?, ?, ?)",
                vec![
                    Bind::Text(user.to_owned()),
                    Bind::Int(i64::from(d.position)),
                    Bind::Text(d.label.clone()),
                    Bind::Text(d.number.clone()),
                ],
            )
            .await?;
        }
        self.touched_users.insert(user.to_owned());
        self.record("profile", user, Some(json_of(&before)), Some(json_of(edit)));
        Ok(())
    }

    /// Reads a user's current profile edit inside this change.
    pub async fn profile_edit(&mut self, user: &str) -> Result<ProfileEdit> {
        self.store.profile_edit_in(&mut self.tx, user).await
    }

    /// Creates or replaces a turret; its user, site and software must exist.
    pub async fn put_turret(&mut self, turret: &Turret) -> Result<()> {
        turret.validate()?;
        if self
            .store
            .site_in(&mut self.tx, &turret.site)
            .await?
            .is_none()
        {
            return Err(invalid("site", format!("no site {:?}", turret.site)));
        }
        if let Some(user) = &turret.user
            && self.store.user_in(&mut self.tx, user).await?.is_none()
        {
            return Err(invalid("user", format!("no user {user:?}")));
        }
        if let Some(sw) = &turret.software
            && self
                .store
                .package_in(&mut self.tx, &sw.package, &sw.version)
                .await?
                .is_none()
        {
            return Err(invalid(
                "software",
                format!("no software package {} {}", sw.package, sw.version),
            ));
        }
        let before = self
            .store
            .turret_in(&mut self.tx, &turret.device_id)
            .await?;
        if before.as_ref() == Some(turret) {
            return Ok(());
        }
        let binds = vec![
            Bind::OptText(turret.user.clone()),
            Bind::Text(turret.model.clone()),
            Bind::Text(turret.site.clone()),
            Bind::OptText(turret.software.as_ref().map(|s| s.package.clone())),
            Bind::OptText(turret.software.as_ref().map(|s| s.version.clone())),
            Bind::Text(turret.device_id.clone()),
        ];
        self.upsert(before.is_some(), "UPDATE turrets SET user_name = ?, model = ?, site = ?, software_package = ?, software_version = ? WHERE device_id = ?", "INSERT INTO turrets (user_name, model, site, software_package, software_version, device_id) VALUES (?, ?, ?, ?, ?, ?)", binds)
            .await?;
        // A turret handed to someone else loses its credential: the old user's device
        // password must not register as the new user.
        if let Some(b) = &before
            && b.user != turret.user
        {
            self.exec(
                "DELETE FROM sip_credentials WHERE device_id = ?",
                vec![Bind::Text(turret.device_id.clone())],
            )
            .await?;
        }
        for u in before.iter().chain([turret]).filter_map(|t| t.user.clone()) {
            self.touched_users.insert(u);
        }
        self.record_put("turret", &turret.device_id, before, turret);
        Ok(())
    }

    /// Deletes a turret and its SIP credentials.
    pub async fn delete_turret(&mut self, device_id: &str) -> Result<()> {
        let before = self
            .store
            .turret_in(&mut self.tx, device_id)
            .await?
            .ok_or_else(|| not_found("turret", device_id))?;
        for sql in [
            "DELETE FROM sip_credentials WHERE device_id = ?",
            "DELETE FROM turrets WHERE device_id = ?",
        ] {
            self.exec(sql, vec![Bind::Text(device_id.to_owned())])
                .await?;
        }
        if let Some(u) = &before.user {
            self.touched_users.insert(u.clone());
        }
        self.record("turret", device_id, Some(json_of(&before)), None);
        Ok(())
    }

    /// Creates or replaces a software package record.
    pub async fn put_package(&mut self, package: &SoftwarePackage) -> Result<()> {
        package.validate()?;
        let package = &SoftwarePackage {
            sha256: package.sha256.to_ascii_lowercase(),
            ..package.clone()
        };
        let before = self
            .store
            .package_in(&mut self.tx, &package.name, &package.version)
            .await?;
        if before.as_ref() == Some(package) {
            return Ok(());
        }
        let size = i64::try_from(package.size).map_err(|_| invalid("size", "too large"))?;
        let binds = vec![
            Bind::Text(package.file_name.clone()),
            Bind::Text(package.sha256.clone()),
            Bind::Int(size),
            Bind::Text(package.name.clone()),
            Bind::Text(package.version.clone()),
        ];
        self.upsert(before.is_some(), "UPDATE software_packages SET file_name = ?, sha256 = ?, size = ? WHERE name = ? AND version = ?", "INSERT INTO software_packages (file_name, sha256, size, name, version) VALUES (?, ?, ?, ?, ?)", binds)
            .await?;
        let key = format!("{} {}", package.name, package.version);
        let rows = sqlx::query(self.sql(
            "SELECT user_name FROM turrets WHERE software_package = ? AND software_version = ? AND user_name IS NOT NULL",
        ))
        .bind(&package.name)
        .bind(&package.version)
        .fetch_all(&mut *self.tx)
        .await?;
        for r in &rows {
            self.touched_users.insert(text(r, "user_name")?);
        }
        self.record_put("software", &key, before, package);
        Ok(())
    }

    /// Deletes a software package no turret is set to run.
    pub async fn delete_package(&mut self, name: &str, version: &str) -> Result<()> {
        let key = format!("{name} {version}");
        let before = self
            .store
            .package_in(&mut self.tx, name, version)
            .await?
            .ok_or_else(|| not_found("software package", &key))?;
        let rows = sqlx::query(self.sql(
            "SELECT device_id FROM turrets WHERE software_package = ? AND software_version = ?",
        ))
        .bind(name)
        .bind(version)
        .fetch_all(&mut *self.tx)
        .await?;
        if !rows.is_empty() {
            let devices: Vec<String> = rows
                .iter()
                .filter_map(|r| text(r, "device_id").ok())
                .collect();
            return Err(Error::Conflict(format!(
                "{key} is set on turrets {devices:?}"
            )));
        }
        self.exec(
            "DELETE FROM software_packages WHERE name = ? AND version = ?",
            vec![Bind::Text(name.to_owned()), Bind::Text(version.to_owned())],
        )
        .await?;
        self.record("software", &key, Some(json_of(&before)), None);
        Ok(())
    }

    /// Replaces the whole dial plan.
    pub async fn put_dial_plan(&mut self, rules: &[DialPlanRule]) -> Result<()> {
        crate::model::validate_dial_plan(rules)?;
        let before = self.store_dial_plan().await?;
        if before == rules {
            return Ok(());
        }
        self.exec("DELETE FROM dial_plan", vec![]).await?;
        for (i, r) in rules.iter().enumerate() {
            self.exec(
                "INSERT INTO dial_plan (position, prefix, route, description) VALUES (?, ?, ?, ?)",
                vec![
                    Bind::Int(i64::try_from(i).unwrap_or(i64::MAX)),
                    Bind::Text(r.prefix.clone()),
                    Bind::Text(r.route.as_str().to_owned()),
                    Bind::Text(r.description.clone()),
                ],
            )
            .await?;
        }
        self.record(
            "dial_plan",
            "",
            Some(json_of(&before)),
            Some(json_of(&rules)),
        );
        Ok(())
    }

    async fn store_dial_plan(&mut self) -> Result<Vec<DialPlanRule>> {
        let rows = sqlx::query(
            self.sql("SELECT prefix, route, description FROM dial_plan ORDER BY position"),
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DialPlanRule {
                    prefix: text(r, "prefix")?,
                    route: Route::parse("route", &text(r, "route")?)?,
                    description: text(r, "description")?,
                })
            })
            .collect()
    }

    /// Mints a new SIP credential for a turret (replacing any earlier one) and keeps
    /// only its HA1s. The turret must be assigned to a user.
    /// With `for_user`, refused unless the turret is (still) that user's, checked
    /// inside this change.
    pub async fn mint_sip_credential(
        &mut self,
        device_id: &str,
        realm: &str,
        for_user: Option<&str>,
    ) -> Result<SipCredential> {
        let turret = self
            .store
            .turret_in(&mut self.tx, device_id)
            .await?
            .ok_or_else(|| not_found("turret", device_id))?;
        let user = turret.user.ok_or_else(|| {
            Error::Conflict(format!(
                "turret {device_id:?} is spare: assign it to a user first"
            ))
        })?;
        if let Some(expected) = for_user
            && expected != user
        {
            // Reassigned since the caller looked: never hand one user another's device.
            return Err(Error::Conflict(format!(
                "turret {device_id:?} is no longer assigned to {expected:?}"
            )));
        }
        let username = format!("dev-{device_id}");
        let password = new_secret();
        use floorwire::sip::auth::{Algorithm, ha1};
        self.exec(
            "DELETE FROM sip_credentials WHERE device_id = ?",
            vec![Bind::Text(device_id.to_owned())],
        )
        .await?;
        self.exec(
            "INSERT INTO sip_credentials (username, device_id, user_name, realm, ha1_md5, ha1_sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                Bind::Text(username.clone()),
                Bind::Text(device_id.to_owned()),
                Bind::Text(user.clone()),
                Bind::Text(realm.to_owned()),
                Bind::Text(ha1(Algorithm::Md5, &username, realm, &password)),
                Bind::Text(ha1(Algorithm::Sha256, &username, realm, &password)),
                Bind::Int(self.at),
            ],
        )
        .await?;
        self.record(
            "sip_credential",
            &username,
            None,
            Some(serde_json::json!({"device_id": device_id, "user": user, "realm": realm})),
        );
        Ok(SipCredential {
            username,
            password,
            realm: realm.to_owned(),
        })
    }

    /// Records the changes and new profile versions, then commits; returns the
    /// revision (unchanged when nothing changed: the transaction is rolled back).
    pub async fn commit(mut self) -> Result<i64> {
        if self.changes.is_empty() {
            self.tx.rollback().await?;
            return self.store.revision().await;
        }
        let changes = std::mem::take(&mut self.changes);
        for (seq, (entity, key, action, before, after)) in changes.into_iter().enumerate() {
            let doc = |v: Option<Value>| v.map(|v| v.to_string());
            self.exec(
                "INSERT INTO changes (revision, seq, at, actor, entity, entity_key, action, before_doc, after_doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                vec![
                    Bind::Int(self.revision),
                    Bind::Int(i64::try_from(seq).unwrap_or(i64::MAX)),
                    Bind::Int(self.at),
                    Bind::Text(self.actor.clone()),
                    Bind::Text(entity),
                    Bind::Text(key),
                    Bind::Text(action.to_owned()),
                    Bind::OptText(doc(before)),
                    Bind::OptText(doc(after)),
                ],
            )
            .await?;
        }
        for user in std::mem::take(&mut self.touched_users) {
            let Some(document) = self.store.render_in(&mut self.tx, &user).await? else {
                continue;
            };
            let document = serde_json::to_string(&document).unwrap_or_default();
            let latest = sqlx::query(self.sql(
                "SELECT version, document FROM profile_versions WHERE user_name = ? ORDER BY version DESC LIMIT 1",
            ))
            .bind(&user)
            .fetch_optional(&mut *self.tx)
            .await?;
            let next = match &latest {
                Some(row) if text(row, "document")? == document => continue,
                Some(row) => int(row, "version")? + 1,
                None => 1,
            };
            self.exec(
                "INSERT INTO profile_versions (user_name, version, revision, at, actor, document) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    Bind::Text(user),
                    Bind::Int(next),
                    Bind::Int(self.revision),
                    Bind::Int(self.at),
                    Bind::Text(self.actor.clone()),
                    Bind::Text(document),
                ],
            )
            .await?;
        }
        self.tx.commit().await?;
        Ok(self.revision)
    }
}

/// A bound value for [`Write::exec`].
#[derive(Debug)]
enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

/// 24 characters of URL-safe base64 from 18 random bytes (144 bits).
fn new_secret() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            number_placeholders("SELECT a FROM t WHERE b = ? AND (c = ? OR d = ?)"),
            "SELECT a FROM t WHERE b = $1 AND (c = $2 OR d = $3)"
        );
    }

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("mariadb://h/db").unwrap(), Backend::MySql);
        assert_eq!(
            Backend::of_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        let e = Backend::of_url("oracle://h").unwrap_err().to_string();
        assert!(e.contains("store.url") && e.contains("oracle"), "{e}");
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
    }
}
