//! A turret's login: explicit FTPS to the TSS (`AUTH TLS`, `PROT P`, passive), the
//! user's password, then its own profile document (`DEVICE_ID.json`, which mints the
//! turret a fresh SIP credential) and, when the profile names one, its software
//! package, checked against the profile's SHA-256 (docs/ftpes.md).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest;

use crate::Error;

/// The SIP credential the download minted for this turret.
#[derive(Debug, Clone, Deserialize)]
pub struct SipCredential {
    pub device_id: String,
    pub username: String,
    pub password: String,
    pub realm: String,
}

/// A line on the turret.
#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    pub id: String,
    pub kind: String,
    pub number: String,
    #[serde(default)]
    pub far_end: Option<String>,
    pub access: String,
}

/// What the turret uses of its profile document.
#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    pub schema: String,
    /// The TPOs to register with, in order.
    pub tpos: Vec<String>,
    pub lines: Vec<Line>,
    pub sip: Vec<SipCredential>,
    #[serde(default)]
    pub turrets: Vec<serde_json::Value>,
}

/// The login's outcome.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub profile: Profile,
    /// The TPOs, parsed.
    pub tpos: Vec<SocketAddr>,
    /// This turret's credential.
    pub credential: SipCredential,
    /// The software package's file name and size, when the profile names one (its
    /// SHA-256 matched).
    pub software: Option<(String, usize)>,
}

/// Logs in to the TSS's FTPES at `ftpes` (certificate checked against `ca_file`) as
/// `user`, and downloads `DEVICE_ID.json` and the software it names.
pub async fn login(
    ftpes: SocketAddr,
    ca_file: &Path,
    user: &str,
    password: &str,
    device_id: &str,
) -> Result<LoggedIn, Error> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| Error::Login(format!("CA file {}: {e}", ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        roots
            .add(cert)
            .map_err(|e| Error::Login(format!("CA file {}: {e}", ca_file.display())))?;
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let (user, password, device_id) = (user.to_owned(), password.to_owned(), device_id.to_owned());
    tokio::task::spawn_blocking(move || download(ftpes, tls, &user, &password, &device_id))
        .await
        .map_err(|e| Error::Login(e.to_string()))?
}

fn download(
    ftpes: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    user: &str,
    password: &str,
    device_id: &str,
) -> Result<LoggedIn, Error> {
    use suppaftp::{Mode, RustlsConnector, RustlsFtpStream, types::FileType};
    let fail =
        |what: &str, e: suppaftp::FtpError| Error::Login(format!("{user} at {ftpes}: {what}: {e}"));
    let mut ftp = RustlsFtpStream::connect_timeout(ftpes, std::time::Duration::from_secs(5))
        .map_err(|e| fail("connecting", e))?
        .into_secure(RustlsConnector::from(tls), &ftpes.ip().to_string())
        .map_err(|e| fail("AUTH TLS", e))?;
    ftp.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    ftp.login(user, password).map_err(|e| fail("login", e))?;
    ftp.transfer_type(FileType::Binary)
        .map_err(|e| fail("TYPE I", e))?;
    ftp.set_mode(Mode::ExtendedPassive);
    let document = ftp
        .retr_as_buffer(&format!("{device_id}.json"))
        .map_err(|e| fail(&format!("RETR {device_id}.json"), e))?
        .into_inner();
    let profile: Profile = serde_json::from_slice(&document)
        .map_err(|e| Error::Login(format!("{user}: profile: {e}")))?;
    if !profile.schema.starts_with("floorwire.profile/1") {
        return Err(Error::Login(format!(
            "{user}: profile schema {} not understood",
            profile.schema
        )));
    }
    let credential = profile
        .sip
        .iter()
        .find(|c| c.device_id == device_id)
        .cloned()
        .ok_or_else(|| {
            Error::Login(format!(
                "{user}: the profile holds no SIP credential for {device_id}"
            ))
        })?;
    let tpos = profile
        .tpos
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|_| Error::Login(format!("{user}: profile TPO {t:?} is not IP:port")))
        })
        .collect::<Result<Vec<SocketAddr>, Error>>()?;
    let software = profile
        .turrets
        .iter()
        .find(|t| t["device_id"] == device_id)
        .and_then(|t| t.get("software").cloned());
    let software = match software {
        Some(s) => {
            let file = s["file_name"].as_str().unwrap_or_default().to_owned();
            let bytes = ftp
                .retr_as_buffer(&format!("software/{file}"))
                .map_err(|e| fail(&format!("RETR software/{file}"), e))?
                .into_inner();
            let sha: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if Some(sha.as_str()) != s["sha256"].as_str() {
                return Err(Error::Login(format!(
                    "{user}: software/{file}: SHA-256 {sha} is not the profile's"
                )));
            }
            Some((file, bytes.len()))
        }
        None => None,
    };
    let _ = ftp.quit();
    Ok(LoggedIn {
        profile,
        tpos,
        credential,
        software,
    })
}
