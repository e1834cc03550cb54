//! Login against an LDAP directory: search-then-bind over LDAPS or StartTLS, across an
//! ordered list of servers, moving to the next when one fails.
//!
//! For each login: connect (TLS verified against `ca_file`), bind as the search
//! account (or anonymously), search `base_dn` for `user_filter` with the user name
//! escaped (RFC 4515), require exactly one entry whose `user_attribute` equals the
//! typed name byte for byte (so `ADMIN`, ` admin` or a full-width `ａdmin` are not
//! `admin`), bind as that entry with the password, then read the role from
//! `admin_group_dn` membership. A server that cannot be reached, refuses TLS or
//! fails the search account's bind is skipped for the next; a wrong password is a
//! definitive answer from the first server that gives one.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use serde::Deserialize;

use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::model::Role;

/// `[ldap]`: the directory the TSS checks passwords against. With no `urls`, the TSS
/// uses its own user table instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    /// Servers in the order tried: `ldaps://host:636` or `ldap://host:389` (then
    /// `starttls` must be true: the TSS never sends a password in clear).
    pub urls: Vec<String>,
    pub starttls: bool,
    /// PEM file of the CA(s) that sign the directory's certificates (required when
    /// `urls` is set).
    pub ca_file: String,
    /// The account that searches for users; empty for an anonymous search.
    pub bind_dn: String,
    pub bind_password: String,
    pub base_dn: String,
    /// Search filter; `{user}` is replaced by the escaped user name.
    pub user_filter: String,
    /// Attribute that must equal the typed user name exactly.
    pub user_attribute: String,
    /// Group whose `member`s get the admin role; others are traders.
    pub admin_group_dn: String,
    /// Per-server bound on connecting, each bind and each search.
    pub timeout_secs: u64,
}

impl LdapSection {
    /// Whether a directory is configured.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// Checks what can be checked before the first login.
    pub fn validate(&self) -> Result<()> {
        for (i, url) in self.urls.iter().enumerate() {
            let secure =
                url.starts_with("ldaps://") || (url.starts_with("ldap://") && self.starttls);
            if !secure {
                return Err(Error::Config(format!(
                    "ldap.urls[{i}]: {url:?} must be ldaps://, or ldap:// with ldap.starttls = true"
                )));
            }
        }
        if self.enabled() {
            if self.base_dn.is_empty() {
                return Err(Error::Config("ldap.base_dn: must be set".into()));
            }
            if !self.user_filter.contains("{user}") {
                return Err(Error::Config(
                    "ldap.user_filter: must contain {user}".into(),
                ));
            }
            if self.user_attribute.is_empty() {
                return Err(Error::Config("ldap.user_attribute: must be set".into()));
            }
        }
        Ok(())
    }
}

/// Longest user name sent to a directory (longer ones are refused before any traffic).
pub const MAX_USER_LEN: usize = 255;

/// A configured directory: settings plus the TLS client configuration.
#[derive(Debug, Clone)]
pub struct Directory {
    config: LdapSection,
    tls: Arc<rustls::ClientConfig>,
}

impl Directory {
    /// Builds the directory client, reading `ca_file`.
    pub fn new(config: LdapSection) -> Result<Self> {
        config.validate()?;
        let mut roots = rustls::RootCertStore::empty();
        if config.ca_file.is_empty() {
            return Err(Error::Config(
                "ldap.ca_file: set the PEM file of the directory's CA".into(),
            ));
        }
        let pem = std::fs::read(&config.ca_file)
            .map_err(|e| Error::Config(format!("ldap.ca_file {}: {e}", config.ca_file)))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| Error::Config(format!("ldap.ca_file {}: {e}", config.ca_file)))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("ldap.ca_file {}: {e}", config.ca_file)))?;
        }
        if roots.is_empty() {
            return Err(Error::Config(format!(
                "ldap.ca_file {}: no certificate in it",
                config.ca_file
            )));
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Directory {
            config,
            tls: Arc::new(tls),
        })
    }

    /// Checks `user`/`password`: `Ok(None)` for any refusal, `Err` only when no
    /// server could answer.
    pub async fn login(&self, user: &str, password: &str) -> Result<Option<Identity>> {
        // RFC 4513 §5.1.2: a simple bind with an empty password is an unauthenticated
        // bind that "succeeds"; refuse it before any traffic.
        if password.is_empty()
            || user.is_empty()
            || user.len() > MAX_USER_LEN
            || user.chars().any(char::is_control)
        {
            return Ok(None);
        }
        let mut last_error = String::new();
        for url in &self.config.urls {
            match self.try_server(url, user, password).await {
                Ok(identity) => return Ok(identity),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "directory server failed; trying the next");
                    last_error = format!("{url}: {e}");
                }
            }
        }
        Err(Error::DirectoryUnavailable(last_error))
    }

    /// One server's answer: who logged in, or `None` for a refusal; `Err` when the
    /// server could not answer (the next one is tried).
    async fn try_server(
        &self,
        url: &str,
        user: &str,
        password: &str,
    ) -> std::result::Result<Option<Identity>, ldap3::LdapError> {
        let timeout = Duration::from_secs(self.config.timeout_secs.max(1));
        let settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(self.config.starttls && url.starts_with("ldap://"))
            .set_config(self.tls.clone());
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url).await?;
        ldap3::drive!(conn);
        let ldap = &mut ldap;
        if self.config.bind_dn.is_empty() {
            // Anonymous search: nothing to bind.
        } else {
            ldap.with_timeout(timeout)
                .simple_bind(&self.config.bind_dn, &self.config.bind_password)
                .await?
                .success()?;
        }
        let filter = self
            .config
            .user_filter
            .replace("{user}", &ldap_escape(user));
        let attr = self.config.user_attribute.as_str();
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(&self.config.base_dn, Scope::Subtree, &filter, vec![attr])
            .await?
            .success()?;
        let entries: Vec<SearchEntry> = entries.into_iter().map(SearchEntry::construct).collect();
        let [entry] = entries.as_slice() else {
            // None, or ambiguous: refused like a wrong password.
            let _ = ldap.unbind().await;
            return Ok(None);
        };
        let exact = entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(attr))
            .is_some_and(|(_, values)| values.iter().any(|v| v == user));
        if !exact {
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        let bind = ldap
            .with_timeout(timeout)
            .simple_bind(&entry.dn, password)
            .await?;
        if bind.rc != 0 {
            // 49 invalidCredentials, or any other refusal of this user's bind.
            let _ = ldap.unbind().await;
            return Ok(None);
        }
        let role = if self.config.admin_group_dn.is_empty() {
            Role::Trader
        } else {
            let filter = format!("(member={})", ldap_escape(entry.dn.as_str()));
            let found = ldap
                .with_timeout(timeout)
                .search(
                    &self.config.admin_group_dn,
                    Scope::Base,
                    &filter,
                    vec!["1.1"],
                )
                .await?;
            match found.success() {
                Ok((groups, _)) if !groups.is_empty() => Role::Admin,
                _ => Role::Trader,
            }
        };
        let _ = ldap.unbind().await;
        Ok(Some(Identity {
            name: user.to_owned(),
            role,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(urls: &[&str], starttls: bool) -> LdapSection {
        LdapSection {
            urls: urls.iter().map(|s| s.to_string()).collect(),
            starttls,
            ca_file: String::new(),
            bind_dn: String::new(),
            bind_password: String::new(),
            base_dn: "dc=floorwire,dc=test".into(),
            user_filter: "(uid={user})".into(),
            user_attribute: "uid".into(),
            admin_group_dn: String::new(),
            timeout_secs: 5,
        }
    }

    #[test]
    fn passwords_never_go_in_clear() {
        assert!(
            section(&["ldaps://127.0.1.50:636"], false)
                .validate()
                .is_ok()
        );
        assert!(section(&["ldap://127.0.1.50:389"], true).validate().is_ok());
        let e = section(&["ldaps://a:636", "ldap://b:389"], false)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("ldap.urls[1]"), "{e}");
        let mut s = section(&["ldaps://a:636"], false);
        s.user_filter = "(uid=admin)".into();
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("ldap.user_filter")
        );
    }

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(
            ldap_escape("*)(uid=*))(|(uid=*"),
            "\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a"
        );
        assert_eq!(ldap_escape("\\2a"), "\\5c2a");
    }
}
