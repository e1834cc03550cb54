//! What a turret sees over FTPES: a read-only home rendered live from the store.
//!
//! ```text
//! /profile.json            the profile document with a fresh SIP credential per turret
//! /<device_id>.json        the same document with a fresh credential for that turret
//!                          only (users with several turrets download this one)
//! /software/<file>         the packages the user's turrets should run
//! ```
//!
//! **Invariant:** a path is parsed into one of these entries ([`Entry::parse`]) before
//! anything is read; anything else — `..`, other names, any other depth — is
//! "550 file not available", whoever asks and however it is spelt.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use unftp_core::auth::UserDetail;
use unftp_core::storage::{Error as FtpError, ErrorKind, Fileinfo, Metadata, StorageBackend};

use crate::profile::ProfileDocument;
use crate::store::Store;

/// The logged-in turret user (the name the gate authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurretUser {
    pub name: String,
}

impl fmt::Display for TurretUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UserDetail for TurretUser {}

/// One entry of a turret's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Root,
    Profile,
    /// `<device_id>.json`: the profile as one turret downloads it.
    Device(String),
    SoftwareDir,
    Software(String),
}

/// The profile file's name.
pub const PROFILE_FILE: &str = "profile.json";

impl Entry {
    /// Parses a path as libunftp hands it over (absolute, or relative to the home).
    pub fn parse(path: &Path) -> Option<Entry> {
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(p) => parts.push(p.to_str()?),
                Component::ParentDir | Component::Prefix(_) => return None,
            }
        }
        match parts.as_slice() {
            [] => Some(Entry::Root),
            [PROFILE_FILE] => Some(Entry::Profile),
            ["software"] => Some(Entry::SoftwareDir),
            [file] => {
                let device = file.strip_suffix(".json")?;
                crate::model::check_id("device", device).ok()?;
                Some(Entry::Device(device.to_owned()))
            }
            ["software", file] if crate::model::check_id("file", file).is_ok() => {
                Some(Entry::Software((*file).to_owned()))
            }
            _ => None,
        }
    }
}

/// Size and kind of an entry.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    len: u64,
    dir: bool,
}

impl Metadata for EntryMeta {
    fn len(&self) -> u64 {
        self.len
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_file(&self) -> bool {
        !self.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> unftp_core::storage::Result<SystemTime> {
        Ok(SystemTime::now())
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

/// The storage backend: profiles from the store, packages from `software_dir`.
#[derive(Debug, Clone)]
pub struct ProfileStorage {
    pub store: Store,
    pub software_dir: PathBuf,
    pub realm: String,
}

fn unavailable() -> FtpError {
    FtpError::from(ErrorKind::PermanentFileNotAvailable)
}

fn local(e: impl fmt::Display) -> FtpError {
    tracing::warn!(error = %e, "ftpes storage");
    FtpError::from(ErrorKind::LocalError)
}

impl ProfileStorage {
    /// The user's profile document with a freshly minted SIP credential per turret
    /// (`mint`), or with placeholders of the same length (for SIZE and LIST); with
    /// `device`, for that turret only.
    pub async fn render_profile(
        &self,
        user: &str,
        device: Option<&str>,
        mint: bool,
    ) -> Result<Vec<u8>, crate::Error> {
        let (document, version) = self.document(user).await?;
        let turrets = turrets_of(&document, user, device)?;
        let credentials = if mint {
            let mut w = self.store.write(user).await?;
            let mut minted = Vec::with_capacity(turrets.len());
            for device_id in &turrets {
                let c = w
                    .mint_sip_credential(device_id, &self.realm, Some(user))
                    .await?;
                minted.push(credential(device_id, &c.username, &c.password, &c.realm));
            }
            w.commit().await?;
            minted
        } else {
            self.placeholders(&turrets)
        };
        render(&document, version, credentials)
    }

    /// The document and its stored version, read once.
    async fn document(&self, user: &str) -> Result<(ProfileDocument, i64), crate::Error> {
        let document = self.store.profile_document(user).await?;
        let version = self
            .store
            .profile_version(user, None)
            .await
            .map(|v| v.version)
            .unwrap_or(0);
        Ok((document, version))
    }

    /// Credentials shaped and sized like minted ones, so SIZE and LIST tell the truth.
    fn placeholders(&self, turrets: &[String]) -> Vec<serde_json::Value> {
        turrets
            .iter()
            .map(|d| credential(d, &format!("dev-{d}"), &"x".repeat(24), &self.realm))
            .collect()
    }

    /// The packages the user's turrets should run: (file name, size).
    async fn software(&self, user: &str) -> Result<Vec<(String, u64)>, crate::Error> {
        let document = self.store.profile_document(user).await?;
        let mut files: Vec<(String, u64)> = document
            .turrets
            .iter()
            .filter_map(|t| t.software.as_ref())
            .map(|p| (p.file_name.clone(), p.size))
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    async fn software_file(&self, user: &str, file: &str) -> Result<u64, FtpError> {
        self.software(user)
            .await
            .map_err(local)?
            .into_iter()
            .find(|(f, _)| f == file)
            .map(|(_, size)| size)
            .ok_or_else(unavailable)
    }
}

/// The device ids `device` selects among the user's turrets (all when `None`).
fn turrets_of(
    document: &ProfileDocument,
    user: &str,
    device: Option<&str>,
) -> Result<Vec<String>, crate::Error> {
    let turrets: Vec<String> = document
        .turrets
        .iter()
        .filter(|t| device.is_none_or(|d| d == t.device_id))
        .map(|t| t.device_id.clone())
        .collect();
    match device {
        Some(d) if turrets.is_empty() => Err(crate::Error::NotFound {
            what: format!("turret {d:?} of user {user:?}"),
        }),
        _ => Ok(turrets),
    }
}

/// One entry of the document's `sip` array.
fn credential(device_id: &str, username: &str, password: &str, realm: &str) -> serde_json::Value {
    serde_json::json!({
        "device_id": device_id,
        "username": username,
        "password": password,
        "realm": realm,
    })
}

/// The downloaded file: the document with its version and the credentials.
fn render(
    document: &ProfileDocument,
    version: i64,
    credentials: Vec<serde_json::Value>,
) -> Result<Vec<u8>, crate::Error> {
    let mut value =
        serde_json::to_value(document).map_err(|e| crate::Error::Config(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("version".into(), serde_json::json!(version));
        obj.insert("sip".into(), serde_json::Value::Array(credentials));
    }
    let mut bytes =
        serde_json::to_vec_pretty(&value).map_err(|e| crate::Error::Config(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

// Generic over the user type because libunftp's builder asks for its default user
// first; the user's Display is the name the gate authenticated.
#[async_trait::async_trait]
impl<U: UserDetail + 'static> StorageBackend<U> for ProfileStorage {
    type Metadata = EntryMeta;

    async fn metadata<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &U,
        path: P,
    ) -> unftp_core::storage::Result<EntryMeta> {
        match Entry::parse(path.as_ref()).ok_or_else(unavailable)? {
            Entry::Root | Entry::SoftwareDir => Ok(EntryMeta { len: 0, dir: true }),
            Entry::Profile => {
                let len = self
                    .render_profile(&user.to_string(), None, false)
                    .await
                    .map_err(local)?
                    .len();
                Ok(EntryMeta {
                    len: len as u64,
                    dir: false,
                })
            }
            Entry::Device(device) => {
                let len = self
                    .render_profile(&user.to_string(), Some(&device), false)
                    .await
                    .map_err(|_| unavailable())?
                    .len();
                Ok(EntryMeta {
                    len: len as u64,
                    dir: false,
                })
            }
            Entry::Software(file) => Ok(EntryMeta {
                len: self.software_file(&user.to_string(), &file).await?,
                dir: false,
            }),
        }
    }

    async fn list<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &U,
        path: P,
    ) -> unftp_core::storage::Result<Vec<Fileinfo<PathBuf, EntryMeta>>> {
        match Entry::parse(path.as_ref()).ok_or_else(unavailable)? {
            Entry::Root => {
                // One read of the document serves every entry's size.
                let name = user.to_string();
                let (document, version) = self.document(&name).await.map_err(local)?;
                let all = turrets_of(&document, &name, None).map_err(local)?;
                let profile = render(&document, version, self.placeholders(&all)).map_err(local)?;
                let mut entries = vec![
                    Fileinfo {
                        path: PathBuf::from(PROFILE_FILE),
                        metadata: EntryMeta {
                            len: profile.len() as u64,
                            dir: false,
                        },
                    },
                    Fileinfo {
                        path: PathBuf::from("software"),
                        metadata: EntryMeta { len: 0, dir: true },
                    },
                ];
                for device_id in &all {
                    let one = std::slice::from_ref(device_id);
                    let len = render(&document, version, self.placeholders(one))
                        .map_err(local)?
                        .len();
                    entries.push(Fileinfo {
                        path: PathBuf::from(format!("{device_id}.json")),
                        metadata: EntryMeta {
                            len: len as u64,
                            dir: false,
                        },
                    });
                }
                Ok(entries)
            }
            Entry::SoftwareDir => Ok(self
                .software(&user.to_string())
                .await
                .map_err(local)?
                .into_iter()
                .map(|(file, len)| Fileinfo {
                    path: PathBuf::from(file),
                    metadata: EntryMeta { len, dir: false },
                })
                .collect()),
            Entry::Profile | Entry::Device(_) | Entry::Software(_) => {
                Err(FtpError::from(ErrorKind::PermanentDirectoryNotAvailable))
            }
        }
    }

    async fn get<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        user: &U,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        let bytes = match Entry::parse(path.as_ref()).ok_or_else(unavailable)? {
            Entry::Profile => {
                let bytes = self
                    .render_profile(&user.to_string(), None, true)
                    .await
                    .map_err(local)?;
                tracing::info!(user = %user, bytes = bytes.len(), "profile downloaded");
                bytes
            }
            Entry::Device(device) => {
                let bytes = self
                    .render_profile(&user.to_string(), Some(&device), true)
                    .await
                    .map_err(|_| unavailable())?;
                tracing::info!(user = %user, %device, bytes = bytes.len(), "profile downloaded");
                bytes
            }
            Entry::Software(file) => {
                // Streamed from disk: a package is never held in memory whole.
                self.software_file(&user.to_string(), &file).await?;
                use tokio::io::AsyncSeekExt;
                let mut f = tokio::fs::File::open(self.software_dir.join(&file))
                    .await
                    .map_err(|e| {
                        tracing::warn!(%file, error = %e, "software package missing on disk");
                        unavailable()
                    })?;
                f.seek(std::io::SeekFrom::Start(start_pos))
                    .await
                    .map_err(local)?;
                return Ok(Box::new(f));
            }
            Entry::Root | Entry::SoftwareDir => return Err(unavailable()),
        };
        let start = usize::try_from(start_pos)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        Ok(Box::new(std::io::Cursor::new(bytes[start..].to_vec())))
    }

    async fn put<
        P: AsRef<Path> + Send + fmt::Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        _user: &U,
        _input: R,
        _path: P,
        _start_pos: u64,
    ) -> unftp_core::storage::Result<u64> {
        Err(FtpError::from(ErrorKind::PermissionDenied))
    }

    async fn del<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Err(FtpError::from(ErrorKind::PermissionDenied))
    }

    async fn mkd<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Err(FtpError::from(ErrorKind::PermissionDenied))
    }

    async fn rename<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &U,
        _from: P,
        _to: P,
    ) -> unftp_core::storage::Result<()> {
        Err(FtpError::from(ErrorKind::PermissionDenied))
    }

    async fn rmd<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &U,
        _path: P,
    ) -> unftp_core::storage::Result<()> {
        Err(FtpError::from(ErrorKind::PermissionDenied))
    }

    async fn cwd<P: AsRef<Path> + Send + fmt::Debug>(
        &self,
        _user: &U,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        match Entry::parse(path.as_ref()) {
            Some(Entry::Root | Entry::SoftwareDir) => Ok(()),
            _ => Err(FtpError::from(ErrorKind::PermanentDirectoryNotAvailable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_home_entries_parse() {
        let p = |s: &str| Entry::parse(Path::new(s));
        assert_eq!(p("/"), Some(Entry::Root));
        assert_eq!(p("/profile.json"), Some(Entry::Profile));
        assert_eq!(p("./software"), Some(Entry::SoftwareDir));
        assert_eq!(
            p("/software/fw-1.bin"),
            Some(Entry::Software("fw-1.bin".into()))
        );
        for bad in [
            "/../etc/passwd",
            "/software/../profile.json",
            "/software/..",
            "/etc/passwd",
            "/software/a/b",
            "/profile.json/x",
            "/software/.hidden",
            "/T-0001",
            "/.json",
            "/software/T-0001.json/x",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}
