//! The TSS REST API (axum, JSON; OpenAPI document at `/api/openapi.json`).
//!
//! Admin routes take HTTP Basic credentials checked by [`Authenticator`] and need the
//! `admin` role; every change is audited with the admin's name. TPO routes
//! (`/api/tpo/*`, `POST /api/call-records`) take a bearer token from `[api] tpo_tokens`
//! (an admin may read them too). Errors are JSON `{"error": "...", "field": "..."}`
//! with the status of [`Error::status`]; internals are logged, never sent.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{Authenticator, Identity};
use crate::error::Error;
use crate::metrics::TssMetrics;
use crate::model::{
    AccessRight, Appearance, CallRecord, DialPlanRule, Line, LineKind, ProfileEdit, Role, Site,
    SoftwarePackage, Turret, User, invalid,
};
use crate::store::{CallFilter, Ingested, Store};

/// The OpenAPI 3.1 document served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub tpo_tokens: Arc<Vec<String>>,
    pub realm: Arc<str>,
    pub metrics: TssMetrics,
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match &self.0 {
            Error::Invalid { field, reason } => {
                json!({"error": self.0.to_string(), "field": field, "reason": reason})
            }
            Error::DirectoryUnavailable(detail) => {
                tracing::error!(%detail, "no directory server answered");
                json!({"error": "directory unavailable"})
            }
            e if status.is_server_error() => {
                tracing::error!(error = %e, "request failed");
                json!({"error": "internal error"})
            }
            e => json!({"error": e.to_string()}),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self.0 {
            Error::Unauthenticated => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"floorwire-tss\", charset=\"UTF-8\""),
                );
            }
            Error::Throttled { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// Parses a JSON body, naming the path of the first bad field.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        invalid(field, e.into_inner().to_string())
    })
}

fn source_of(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<crate::listener::Peer>>()
        .map(|c| c.0.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

async fn basic_login(parts: &Parts, state: &ApiState) -> Result<Identity, Error> {
    use base64::Engine;
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(Error::Unauthenticated)?;
    let encoded = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded)
        .ok_or(Error::Unauthenticated)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Error::Unauthenticated)?;
    let decoded = String::from_utf8(decoded).map_err(|_| Error::Unauthenticated)?;
    let (user, password) = decoded.split_once(':').ok_or(Error::Unauthenticated)?;
    let result = state.auth.login(user, password, source_of(parts)).await;
    state.metrics.login(crate::metrics::login_result(&result));
    result
}

/// An authenticated administrator.
#[derive(Debug)]
pub struct Admin(pub Identity);

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let identity = basic_login(parts, state).await?;
        if identity.role != Role::Admin {
            return Err(Error::Forbidden(format!("{} is not an admin", identity.name)).into());
        }
        Ok(Admin(identity))
    }
}

/// A TPO (bearer token) or an administrator.
#[derive(Debug)]
pub struct TpoCaller(pub String);

impl FromRequestParts<ApiState> for TpoCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
        if let Some(token) = bearer {
            let known = state
                .tpo_tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), token.trim().as_bytes()));
            return if known {
                Ok(TpoCaller("tpo".to_owned()))
            } else {
                Err(Error::Unauthenticated.into())
            };
        }
        let Admin(identity) = Admin::from_request_parts(parts, state).await?;
        Ok(TpoCaller(identity.name))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ok_json<T: serde::Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

fn revision_json(revision: i64) -> Response {
    ok_json(&json!({"revision": revision}))
}

/// Builds the API router (state attached).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/sites", get(list_sites))
        .route(
            "/api/sites/{name}",
            get(get_site).put(put_site).delete(delete_site),
        )
        .route("/api/users", get(list_users))
        .route(
            "/api/users/{name}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{name}/password", put(put_password))
        .route(
            "/api/users/{name}/profile",
            get(get_profile).put(put_profile),
        )
        .route(
            "/api/users/{name}/profile/document",
            get(get_profile_document),
        )
        .route(
            "/api/users/{name}/profile/versions",
            get(list_profile_versions),
        )
        .route("/api/users/{name}/profile/diff", get(diff_profile))
        .route("/api/lines", get(list_lines))
        .route(
            "/api/lines/{id}",
            get(get_line).put(put_line).delete(delete_line),
        )
        .route("/api/turrets", get(list_turrets))
        .route(
            "/api/turrets/{device_id}",
            get(get_turret).put(put_turret).delete(delete_turret),
        )
        .route(
            "/api/turrets/{device_id}/sip-credential",
            post(mint_credential),
        )
        .route("/api/software", get(list_packages))
        .route(
            "/api/software/{name}/{version}",
            put(put_package).delete(delete_package),
        )
        .route("/api/dial-plan", get(get_dial_plan).put(put_dial_plan))
        .route("/api/import/{kind}", post(import))
        .route("/api/export/{kind}", get(export))
        .route("/api/changes", get(list_changes))
        .route(
            "/api/call-records",
            post(ingest_call_record).get(list_call_records),
        )
        .route("/api/call-records/batch", post(ingest_call_records))
        .route("/api/reports/calls", get(call_report))
        .route("/api/tpo/revision", get(tpo_revision))
        .route("/api/tpo/config", get(tpo_config))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "no such route"})),
            )
        })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Errors axum answers itself (a bad query string, 405, a body it could not read) in
/// the API's JSON error format, keeping their status and headers (`Allow`).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = (status, axum::Json(json!({ "error": error }))).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

// ---- sites -----------------------------------------------------------------------

async fn list_sites(State(s): State<ApiState>, _: Admin) -> ApiResult {
    Ok(ok_json(&s.store.sites().await?))
}

async fn get_site(State(s): State<ApiState>, _: Admin, Path(name): Path<String>) -> ApiResult {
    Ok(ok_json(&s.store.site(&name).await?))
}

/// The key in the path and in the body must agree (the body may leave it out).
fn keyed<T: DeserializeOwned>(body: &[u8], key_field: &str, key: &str) -> Result<T, Error> {
    let mut value: Value = parse_json(body)?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| invalid("body", "expected a JSON object"))?;
    match obj.get(key_field) {
        None => {
            obj.insert(key_field.to_owned(), Value::String(key.to_owned()));
        }
        Some(Value::String(k)) if k == key => {}
        Some(other) => {
            return Err(invalid(
                key_field,
                format!("{other} does not match {key:?} in the path"),
            ));
        }
    }
    let text = value.to_string();
    parse_json(text.as_bytes())
}

async fn put_site(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let site: Site = keyed(&body, "name", &name)?;
    let mut w = s.store.write(&who.name).await?;
    w.put_site(&site).await?;
    Ok(revision_json(w.commit().await?))
}

async fn delete_site(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(name): Path<String>,
) -> ApiResult {
    let mut w = s.store.write(&who.name).await?;
    w.delete_site(&name).await?;
    Ok(revision_json(w.commit().await?))
}

// ---- users -----------------------------------------------------------------------

async fn list_users(State(s): State<ApiState>, _: Admin) -> ApiResult {
    Ok(ok_json(&s.store.users().await?))
}

async fn get_user(State(s): State<ApiState>, _: Admin, Path(name): Path<String>) -> ApiResult {
    Ok(ok_json(&s.store.user(&name).await?))
}

async fn put_user(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let user: User = keyed(&body, "name", &name)?;
    let mut w = s.store.write(&who.name).await?;
    w.put_user(&user).await?;
    Ok(revision_json(w.commit().await?))
}

async fn delete_user(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(name): Path<String>,
) -> ApiResult {
    let mut w = s.store.write(&who.name).await?;
    w.delete_user(&name).await?;
    Ok(revision_json(w.commit().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

async fn put_password(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let PasswordBody { password } = parse_json(&body)?;
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|e| Error::Config(format!("hashing: {e}")))??;
    let mut w = s.store.write(&who.name).await?;
    w.set_password_hash(&name, Some(&hash)).await?;
    Ok(revision_json(w.commit().await?))
}

// ---- profiles --------------------------------------------------------------------

async fn get_profile(State(s): State<ApiState>, _: Admin, Path(name): Path<String>) -> ApiResult {
    Ok(ok_json(&s.store.profile_edit(&name).await?))
}

async fn put_profile(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let edit: ProfileEdit = parse_json(&body)?;
    let mut w = s.store.write(&who.name).await?;
    w.put_profile(&name, &edit).await?;
    Ok(revision_json(w.commit().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<i64>,
}

async fn get_profile_document(
    State(s): State<ApiState>,
    _: Admin,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult {
    Ok(ok_json(&s.store.profile_version(&name, q.version).await?))
}

async fn list_profile_versions(
    State(s): State<ApiState>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(ok_json(&s.store.profile_versions(&name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: i64,
    to: Option<i64>,
}

async fn diff_profile(
    State(s): State<ApiState>,
    _: Admin,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult {
    let from = s.store.profile_version(&name, Some(q.from)).await?;
    let to = s.store.profile_version(&name, q.to).await?;
    let patch = crate::profile::diff(
        from.document.as_ref().unwrap_or(&Value::Null),
        to.document.as_ref().unwrap_or(&Value::Null),
    );
    Ok(ok_json(
        &json!({"from": from.version, "to": to.version, "patch": patch}),
    ))
}

// ---- lines -----------------------------------------------------------------------

async fn list_lines(State(s): State<ApiState>, _: Admin) -> ApiResult {
    Ok(ok_json(&s.store.lines().await?))
}

async fn get_line(State(s): State<ApiState>, _: Admin, Path(id): Path<String>) -> ApiResult {
    Ok(ok_json(&s.store.line(&id).await?))
}

async fn put_line(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let line: Line = keyed(&body, "id", &id)?;
    let mut w = s.store.write(&who.name).await?;
    w.put_line(&line).await?;
    Ok(revision_json(w.commit().await?))
}

async fn delete_line(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult {
    let mut w = s.store.write(&who.name).await?;
    w.delete_line(&id).await?;
    Ok(revision_json(w.commit().await?))
}

// ---- turrets and software --------------------------------------------------------

async fn list_turrets(State(s): State<ApiState>, _: Admin) -> ApiResult {
    Ok(ok_json(&s.store.turrets().await?))
}

async fn get_turret(State(s): State<ApiState>, _: Admin, Path(id): Path<String>) -> ApiResult {
    Ok(ok_json(&s.store.turret(&id).await?))
}

async fn put_turret(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let turret: Turret = keyed(&body, "device_id", &id)?;
    let mut w = s.store.write(&who.name).await?;
    w.put_turret(&turret).await?;
    Ok(revision_json(w.commit().await?))
}

async fn delete_turret(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult {
    let mut w = s.store.write(&who.name).await?;
    w.delete_turret(&id).await?;
    Ok(revision_json(w.commit().await?))
}

/// Mints a device credential (the password is shown once, here); for lab seeding and
/// for devices provisioned without FTPES.
async fn mint_credential(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> ApiResult {
    let mut w = s.store.write(&who.name).await?;
    let credential = w.mint_sip_credential(&id, &s.realm, None).await?;
    let revision = w.commit().await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"revision": revision, "credential": credential})),
    )
        .into_response())
}

async fn list_packages(State(s): State<ApiState>, _: Admin) -> ApiResult {
    Ok(ok_json(&s.store.packages().await?))
}

async fn put_package(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let mut value: Value = parse_json(&body)?;
    if let Some(obj) = value.as_object_mut() {
        obj.entry("name")
            .or_insert_with(|| Value::String(name.clone()));
        obj.entry("version")
            .or_insert_with(|| Value::String(version.clone()));
    }
    let package: SoftwarePackage = parse_json(value.to_string().as_bytes())?;
    if package.name != name || package.version != version {
        return Err(invalid("name", "name and version must match the path").into());
    }
    let mut w = s.store.write(&who.name).await?;
    w.put_package(&package).await?;
    Ok(revision_json(w.commit().await?))
}

async fn delete_package(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let mut w = s.store.write(&who.name).await?;
    w.delete_package(&name, &version).await?;
    Ok(revision_json(w.commit().await?))
}

async fn get_dial_plan(State(s): State<ApiState>, _: Admin) -> ApiResult {
    Ok(ok_json(&json!({"rules": s.store.dial_plan().await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DialPlanBody {
    rules: Vec<DialPlanRule>,
}

async fn put_dial_plan(State(s): State<ApiState>, Admin(who): Admin, body: Bytes) -> ApiResult {
    let DialPlanBody { rules } = parse_json(&body)?;
    let mut w = s.store.write(&who.name).await?;
    w.put_dial_plan(&rules).await.map_err(|e| match e {
        Error::Invalid { field, reason } => Error::Invalid {
            field: format!("rules{field}"),
            reason,
        },
        other => other,
    })?;
    Ok(revision_json(w.commit().await?))
}

// ---- bulk import and export ------------------------------------------------------

/// A user row in an import: the user, and optionally an embedded-directory password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRow {
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    role: Option<Role>,
    site: String,
    #[serde(default)]
    password: Option<String>,
}

/// An appearance row: which user sees which line, how, on which button.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct AppearanceRow {
    user: String,
    line: String,
    #[serde(default)]
    access: Option<AccessRight>,
    button: u32,
}

/// A line row (CSV has no nested values; `far_end` may be empty).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct LineRow {
    id: String,
    kind: LineKind,
    number: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    far_end: Option<String>,
}

/// Parses rows from CSV (header line names the columns) or a JSON array; each row's
/// label for errors is `[i]` (JSON) or `line N` (CSV).
fn parse_rows<T: DeserializeOwned>(body: &[u8], csv: bool) -> Result<Vec<(String, T)>, Error> {
    if csv {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(body);
        let headers = reader
            .headers()
            .map_err(|e| invalid("line 1", e.to_string()))?
            .clone();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                invalid(format!("line {line}"), e.to_string())
            })?;
            let line = record.position().map(|p| p.line()).unwrap_or(0);
            // Empty cells are absent values, so optional columns may be left blank.
            let mut obj = serde_json::Map::new();
            for (name, cell) in headers.iter().zip(record.iter()) {
                if !cell.is_empty() {
                    let value = match cell.parse::<u64>() {
                        Ok(n) if name == "button" => Value::from(n),
                        _ => Value::String(cell.to_owned()),
                    };
                    obj.insert(name.to_owned(), value);
                }
            }
            let label = format!("line {line}");
            let row = parse_json::<T>(Value::Object(obj).to_string().as_bytes())
                .map_err(|e| prefix_field(&label, e))?;
            rows.push((label, row));
        }
        Ok(rows)
    } else {
        let values: Vec<Value> = parse_json(body)?;
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let label = format!("[{i}]");
                parse_json::<T>(v.to_string().as_bytes())
                    .map(|row| (label.clone(), row))
                    .map_err(|e| prefix_field(&label, e))
            })
            .collect()
    }
}

fn prefix_field(label: &str, e: Error) -> Error {
    match e {
        Error::Invalid { field, reason } => {
            let field = if field == "body" {
                label.to_owned()
            } else {
                format!("{label}.{field}")
            };
            Error::Invalid { field, reason }
        }
        other => other,
    }
}

fn is_csv(headers: &HeaderMap, format: Option<&str>) -> bool {
    match format {
        Some(f) => f.eq_ignore_ascii_case("csv"),
        None => headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/csv")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatQuery {
    format: Option<String>,
}

/// Imports users, lines or appearances, applied whole or not at all.
async fn import(
    State(s): State<ApiState>,
    Admin(who): Admin,
    Path(kind): Path<String>,
    Query(q): Query<FormatQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let csv = is_csv(&headers, q.format.as_deref());
    // Users' passwords are hashed before the change opens: argon2 never runs while
    // every other writer waits on the store revision.
    let mut hashed_users = Vec::new();
    if kind == "users" {
        let rows: Vec<(String, UserRow)> = parse_rows(&body, csv)?;
        for (label, mut row) in rows {
            let hash = match row.password.take() {
                Some(password) => Some(
                    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
                        .await
                        .map_err(|e| Error::Config(format!("hashing: {e}")))?
                        .map_err(|e| prefix_field(&label, e))?,
                ),
                None => None,
            };
            hashed_users.push((label, row, hash));
        }
    }
    let mut w = s.store.write(&who.name).await?;
    let count = match kind.as_str() {
        "users" => {
            let n = hashed_users.len();
            for (label, row, hash) in hashed_users {
                let user = User {
                    name: row.name,
                    display_name: row.display_name,
                    role: row.role.unwrap_or(Role::Trader),
                    site: row.site,
                };
                w.put_user(&user)
                    .await
                    .map_err(|e| prefix_field(&label, e))?;
                if let Some(hash) = hash {
                    w.set_password_hash(&user.name, Some(&hash)).await?;
                }
            }
            n
        }
        "lines" => {
            let rows: Vec<(String, LineRow)> = parse_rows(&body, csv)?;
            let n = rows.len();
            for (label, row) in rows {
                let line = Line {
                    id: row.id,
                    kind: row.kind,
                    number: row.number,
                    label: row.label,
                    far_end: row.far_end,
                };
                w.put_line(&line)
                    .await
                    .map_err(|e| prefix_field(&label, e))?;
            }
            n
        }
        "appearances" => {
            let rows: Vec<(String, AppearanceRow)> = parse_rows(&body, csv)?;
            let n = rows.len();
            let mut edits: std::collections::BTreeMap<String, (String, ProfileEdit)> =
                Default::default();
            for (label, row) in rows {
                crate::model::check_id("user", &row.user).map_err(|e| prefix_field(&label, e))?;
                if !edits.contains_key(&row.user) {
                    let edit = w.profile_edit(&row.user).await?;
                    edits.insert(row.user.clone(), (label.clone(), edit));
                }
                let (_, edit) = edits
                    .get_mut(&row.user)
                    .ok_or_else(|| invalid(&label, "user"))?;
                let appearance = Appearance {
                    line: row.line,
                    access: row.access.unwrap_or(AccessRight::Talk),
                    button: row.button,
                };
                match edit
                    .appearances
                    .iter_mut()
                    .find(|a| a.line == appearance.line)
                {
                    Some(a) => *a = appearance,
                    None => edit.appearances.push(appearance),
                }
            }
            for (user, (label, edit)) in edits {
                w.put_profile(&user, &edit).await.map_err(|e| match e {
                    Error::NotFound { what } => {
                        invalid(format!("{label}.user"), format!("{what} not found"))
                    }
                    e => prefix_field(&format!("{label} (user {user})"), e),
                })?;
            }
            n
        }
        other => {
            return Err(invalid(
                "kind",
                format!("{other:?} is not users, lines or appearances"),
            )
            .into());
        }
    };
    let revision = w.commit().await?;
    Ok(ok_json(&json!({"revision": revision, "imported": count})))
}

async fn export(
    State(s): State<ApiState>,
    _: Admin,
    Path(kind): Path<String>,
    Query(q): Query<FormatQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let csv = match q.format.as_deref() {
        Some(f) => f.eq_ignore_ascii_case("csv"),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv")),
    };
    let rows: Vec<Value> = match kind.as_str() {
        "users" => s
            .store
            .users()
            .await?
            .iter()
            .map(|u| json!({"name": u.name, "display_name": u.display_name, "role": u.role, "site": u.site}))
            .collect(),
        "lines" => s
            .store
            .lines()
            .await?
            .into_iter()
            .map(|l| {
                serde_json::to_value(LineRow {
                    id: l.id,
                    kind: l.kind,
                    number: l.number,
                    label: l.label,
                    far_end: l.far_end,
                })
                .unwrap_or(Value::Null)
            })
            .collect(),
        "appearances" => s
            .store
            .appearances()
            .await?
            .into_iter()
            .map(|(user, a)| {
                serde_json::to_value(AppearanceRow {
                    user,
                    line: a.line,
                    access: Some(a.access),
                    button: a.button,
                })
                .unwrap_or(Value::Null)
            })
            .collect(),
        other => {
            return Err(invalid("kind", format!("{other:?} is not users, lines or appearances")).into());
        }
    };
    if !csv {
        return Ok(ok_json(&rows));
    }
    let columns: &[&str] = match kind.as_str() {
        "users" => &["name", "display_name", "role", "site"],
        "lines" => &["id", "kind", "number", "label", "far_end"],
        _ => &["user", "line", "access", "button"],
    };
    Ok(csv_response(columns, &rows))
}

fn csv_response(columns: &[&str], rows: &[Value]) -> Response {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(columns);
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match row.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Some(v) => v.to_string(),
            })
            .collect();
        let _ = writer.write_record(&cells);
    }
    let body = writer.into_inner().unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

// ---- audit -----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    since: Option<i64>,
    limit: Option<u32>,
}

async fn list_changes(
    State(s): State<ApiState>,
    _: Admin,
    Query(q): Query<ChangesQuery>,
) -> ApiResult {
    let changes = s
        .store
        .changes(q.since.unwrap_or(0), q.limit.unwrap_or(1000))
        .await?;
    Ok(ok_json(&changes))
}

// ---- call records and reports ----------------------------------------------------

async fn ingest_call_record(
    State(s): State<ApiState>,
    TpoCaller(_): TpoCaller,
    body: Bytes,
) -> ApiResult {
    let result = match parse_json::<CallRecord>(&body) {
        Ok(record) => s.store.ingest_call_record(&record).await,
        Err(e) => Err(e),
    };
    s.metrics.call_record(ingest_result(&result));
    Ok(match result? {
        Ingested::Stored => {
            (StatusCode::CREATED, axum::Json(json!({"stored": true}))).into_response()
        }
        Ingested::AlreadyStored => ok_json(&json!({"stored": false, "duplicate": true})),
    })
}

/// The `result` label of a call record's ingestion: `refused` for a record that is
/// not valid (its JSON or a field), `failed` when the store failed.
fn ingest_result(result: &Result<Ingested, Error>) -> &'static str {
    match result {
        Ok(Ingested::Stored) => "stored",
        Ok(Ingested::AlreadyStored) => "duplicate",
        Err(Error::Invalid { .. }) => "refused",
        Err(_) => "failed",
    }
}

/// Most records one batch may carry (a TPO's spool batch holds at most 512).
const MAX_BATCH_RECORDS: usize = 1000;

/// Several call records in one request, each ingested as `POST /api/call-records`
/// would: answered 200 with one result a record, in order — its `status` (201
/// stored, 200 already stored, 400 refused, with `error` and `field`). The records
/// that are valid are stored in one transaction: a store that fails stores none of
/// them (5xx), and posting the batch again is safe.
async fn ingest_call_records(
    State(s): State<ApiState>,
    TpoCaller(_): TpoCaller,
    body: Bytes,
) -> ApiResult {
    let items: Vec<serde_json::Value> = parse_json(&body)?;
    if items.len() > MAX_BATCH_RECORDS {
        return Err(invalid(
            "body",
            format!(
                "{} records; at most {MAX_BATCH_RECORDS} a batch",
                items.len()
            ),
        )
        .into());
    }
    // Each item read and checked on its own: a refused one is answered 400 and the
    // others are still stored. The valid ones move on with the times their check read.
    let mut checked = Vec::with_capacity(items.len());
    let (mut valid, mut times) = (Vec::new(), Vec::new());
    for (i, item) in items.into_iter().enumerate() {
        let record_id = item["record_id"].clone();
        let check = serde_path_to_error::deserialize::<_, CallRecord>(item)
            .map_err(|e| {
                let path = e.path().to_string();
                invalid(
                    if path == "." {
                        format!("[{i}]")
                    } else {
                        format!("[{i}].{path}")
                    },
                    e.into_inner().to_string(),
                )
            })
            .and_then(|record| record.validate().map(|t| (record, t)))
            .map(|(record, t)| {
                valid.push(record);
                times.push(t);
            });
        checked.push((record_id, check));
    }
    let stored = match s.store.store_call_records(&valid, &times).await {
        Ok(stored) => stored,
        Err(e) => {
            for _ in &valid {
                s.metrics.call_record("failed");
            }
            return Err(e.into());
        }
    };
    let mut stored = stored.into_iter();
    let mut results = Vec::with_capacity(checked.len());
    for (record_id, check) in checked {
        let result = check.map(|()| stored.next().expect("one result a valid record"));
        s.metrics.call_record(ingest_result(&result));
        results.push(match result {
            Ok(Ingested::Stored) => json!({"record_id": record_id, "status": 201}),
            Ok(Ingested::AlreadyStored) => {
                json!({"record_id": record_id, "status": 200, "duplicate": true})
            }
            Err(Error::Invalid { field, reason }) => json!({
                "record_id": record_id, "status": 400,
                "error": format!("{field}: {reason}"), "field": field,
            }),
            Err(e) => return Err(e.into()),
        });
    }
    Ok(ok_json(&json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    user: Option<String>,
    line: Option<String>,
    number: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    format: Option<String>,
}

impl ReportQuery {
    fn filter(&self) -> CallFilter {
        CallFilter {
            user: self.user.clone(),
            line: self.line.clone(),
            number: self.number.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            limit: self.limit,
        }
    }
}

async fn list_call_records(
    State(s): State<ApiState>,
    _: Admin,
    Query(q): Query<ReportQuery>,
) -> ApiResult {
    Ok(ok_json(&s.store.call_records(&q.filter()).await?))
}

/// Call report: the matching records with a summary (JSON), or the records as CSV.
async fn call_report(
    State(s): State<ApiState>,
    _: Admin,
    Query(q): Query<ReportQuery>,
) -> ApiResult {
    let records = s.store.call_records(&q.filter()).await?;
    let talk_ms = |r: &CallRecord| -> i64 {
        match (
            &r.answered_at,
            crate::model::parse_time("ended_at", &r.ended_at),
        ) {
            (Some(a), Ok(end)) => crate::model::parse_time("answered_at", a)
                .map(|a| end - a)
                .unwrap_or(0),
            _ => 0,
        }
    };
    let rows: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("talk_seconds".into(), json!(talk_ms(r) / 1000));
            }
            v
        })
        .collect();
    if q.format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("csv"))
    {
        return Ok(csv_response(
            &[
                "record_id",
                "started_at",
                "answered_at",
                "ended_at",
                "direction",
                "user",
                "line",
                "calling",
                "called",
                "outcome",
                "talk_seconds",
                "tpo",
                "call_id",
                "recordings",
            ],
            &rows,
        ));
    }
    let mut by_outcome = serde_json::Map::new();
    for r in &records {
        let n = by_outcome.entry(r.outcome.as_str()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    let summary = json!({
        "calls": records.len(),
        "answered": records.iter().filter(|r| r.answered_at.is_some()).count(),
        "talk_seconds": records.iter().map(talk_ms).sum::<i64>() / 1000,
        "by_outcome": by_outcome,
    });
    Ok(ok_json(&json!({"summary": summary, "records": rows})))
}

// ---- the TPO-facing part ---------------------------------------------------------

async fn tpo_revision(State(s): State<ApiState>, _: TpoCaller) -> ApiResult {
    Ok(revision_json(s.store.revision().await?))
}

/// Everything a TPO needs: dial plan, lines, appearances, sites, device HA1s, with the
/// store revision as ETag (`If-None-Match` with the current one answers 304).
async fn tpo_config(State(s): State<ApiState>, _: TpoCaller, headers: HeaderMap) -> ApiResult {
    // The revision is read first: the data is at least that new, never older.
    let revision = s.store.revision().await?;
    let etag = format!("\"rev-{revision}\"");
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let appearances: Vec<Value> = s
        .store
        .appearances()
        .await?
        .into_iter()
        .map(|(user, a)| json!({"user": user, "line": a.line, "access": a.access, "button": a.button}))
        .collect();
    let body = json!({
        "revision": revision,
        "dial_plan": s.store.dial_plan().await?,
        "sites": s.store.sites().await?,
        "users": s.store.users().await?,
        "lines": s.store.lines().await?,
        "appearances": appearances,
        "turrets": s.store.turrets().await?,
        "devices": s.store.device_credentials().await?,
    });
    Ok(([(header::ETAG, etag)], axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_path() {
        let e = parse_json::<ProfileEdit>(br#"{"appearances":[{"line":"A","button":"x"}]}"#)
            .unwrap_err();
        match e {
            Error::Invalid { field, .. } => assert_eq!(field, "appearances[0].button"),
            other => panic!("{other}"),
        }
        let e = parse_json::<ProfileEdit>(b"not json").unwrap_err();
        assert!(
            matches!(e, Error::Invalid { ref field, .. } if field == "body"),
            "{e}"
        );
    }

    #[test]
    fn csv_rows_are_labelled_by_file_line() {
        let body = b"id,kind,number,label,far_end\nPW1,private_wire_ard,7001,GS,7002\nSH1,shared,7100,Desk,\nBAD,nope,1,,\n";
        let e = parse_rows::<LineRow>(body, true).unwrap_err();
        match e {
            Error::Invalid { field, .. } => assert_eq!(field, "line 4.kind"),
            other => panic!("{other}"),
        }
        let good = b"id,kind,number,label,far_end\nPW1,private_wire_ard,7001,GS,7002\nSH1,shared,7100,Desk,\n";
        let rows = parse_rows::<LineRow>(good, true).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1.far_end, None);
    }

    #[test]
    fn openapi_document_is_json_listing_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let paths = doc["paths"].as_object().expect("paths");
        let source = include_str!("api.rs");
        let start = source.find("pub fn router").expect("router");
        let end = source.find("async fn openapi").expect("openapi handler");
        let mut routes = 0;
        for piece in source[start..end].split('"').skip(1).step_by(2) {
            if piece.starts_with("/api/") {
                routes += 1;
                assert!(
                    paths.contains_key(piece),
                    "{piece} missing from openapi.json"
                );
            }
        }
        assert_eq!(
            routes,
            paths.len(),
            "openapi.json lists a route the router lacks"
        );
        assert!(paths.len() >= 20);
    }
}
