//! One rustls crypto provider for the whole process.
//!
//! With both `ring` and `aws-lc-rs` compiled in (rsipstack pulls `ring`), the first
//! `ClientConfig::builder()` panics unless a process default is installed. Every binary
//! calls [`install_crypto_provider`] first thing in `main`.

/// Installs aws-lc-rs as the process default provider; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn builder_works_after_install() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        let roots = rustls::RootCertStore::empty();
        let _ = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
    }
}
