//! Server certificates for the API and FTPES: PEM files from the config, or a
//! self-signed certificate made at start when none is configured (the lab).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The certificate and key files for `section` (`api`, `ftpes`): the configured pair,
/// or a self-signed certificate for `ip` and `localhost` written to a temporary folder.
pub fn certificate_files(
    section: &str,
    cert_file: &str,
    key_file: &str,
    ip: IpAddr,
) -> Result<(PathBuf, PathBuf)> {
    match (cert_file.is_empty(), key_file.is_empty()) {
        (false, false) => Ok((cert_file.into(), key_file.into())),
        (true, true) => {
            let names = vec![ip.to_string(), "localhost".to_owned()];
            let key = rcgen::KeyPair::generate()
                .map_err(|e| Error::Config(format!("{section} certificate: {e}")))?;
            let cert = rcgen::CertificateParams::new(names)
                .and_then(|p| p.self_signed(&key))
                .map_err(|e| Error::Config(format!("{section} certificate: {e}")))?;
            let dir = private_dir()?;
            let (cert_path, key_path) = (
                dir.join(format!("{section}-cert.pem")),
                dir.join(format!("{section}-key.pem")),
            );
            write_private(&cert_path, cert.pem().as_bytes())?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            tracing::warn!(cert = %cert_path.display(), "{section}: no certificate configured; made a self-signed one");
            Ok((cert_path, key_path))
        }
        _ => Err(Error::Config(format!(
            "{section}.cert_file and {section}.key_file: set both or neither"
        ))),
    }
}

static PRIVATE_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// The folder of this process's self-signed certificates: made fresh (mode 0700,
/// refusing one that already exists), once per process.
fn private_dir() -> Result<PathBuf> {
    let mut dir = PRIVATE_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = dir.as_ref() {
        return Ok(d.clone());
    }
    use std::os::unix::fs::DirBuilderExt;
    let path = std::env::temp_dir().join(format!(
        "floorwire-tss-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
    *dir = Some(path.clone());
    Ok(path)
}

/// Removes the folder of self-signed certificates, if one was made.
pub fn remove_private_dir() {
    let taken = PRIVATE_DIR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(path) = taken {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Writes a new file readable by this user only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    Ok(())
}

/// A TLS acceptor from PEM files; errors name `section`'s keys.
pub fn acceptor(section: &str, cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor> {
    let read = |p: &PathBuf, k: &str| {
        std::fs::read(p).map_err(|e| Error::Config(format!("{section}.{k} {}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert, "cert_file")?.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{section}.cert_file: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{section}.cert_file: no certificate in it"
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(key, "key_file")?.as_slice())
        .map_err(|e| Error::Config(format!("{section}.key_file: {e}")))?
        .ok_or_else(|| Error::Config(format!("{section}.key_file: no private key in it")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("{section} certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
