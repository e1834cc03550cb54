//! The lab's own certificate authority: one CA, and a server certificate per TSS (its
//! API and FTPES share it) and per directory server, naming its address and
//! `localhost`. The CA is made on the lab's first run and kept in `DIR/certs/`, so
//! lab.json readers trust one CA file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::Error;

/// Paths of a server certificate and its key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The lab CA (`certs/lab-ca.pem`, `certs/lab-ca-key.pem`) and its server certificates.
#[derive(Debug)]
pub struct LabCa {
    pub ca_file: PathBuf,
    params: CertificateParams,
    key: KeyPair,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Lab(format!("lab certificate {what}: {e}"))
}

impl LabCa {
    /// Loads the CA in `dir`, or makes it when absent.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let ca_file = dir.join("lab-ca.pem");
        let key_file = dir.join("lab-ca-key.pem");
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| tls_error("CA parameters", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Floorwire lab CA");
        if ca_file.exists() && key_file.exists() {
            let pem = std::fs::read_to_string(&key_file)?;
            let key = KeyPair::from_pem(&pem).map_err(|e| tls_error("CA key", e))?;
            return Ok(Self {
                ca_file,
                params,
                key,
            });
        }
        let key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
        let cert = params.self_signed(&key).map_err(|e| tls_error("CA", e))?;
        write_private(&key_file, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_file, cert.pem())?;
        Ok(Self {
            ca_file,
            params,
            key,
        })
    }

    /// A fresh server certificate for `name` naming `ip` and `localhost`, written to
    /// `dir/NAME-cert.pem` and `dir/NAME-key.pem`.
    pub fn server(&self, dir: &Path, name: &str, ip: IpAddr) -> Result<ServerCert, Error> {
        let key = KeyPair::generate().map_err(|e| tls_error(name, e))?;
        let mut params = CertificateParams::new(vec![ip.to_string(), "localhost".to_owned()])
            .map_err(|e| tls_error(name, e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Floorwire lab {name}"));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| tls_error(name, e))?;
        let paths = ServerCert {
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&paths.cert, cert.pem())?;
        write_private(&paths.key, key.serialize_pem().as_bytes())?;
        Ok(paths)
    }
}

/// Writes a key file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    Ok(())
}
