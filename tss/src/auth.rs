//! Login: a user name and password checked against the directory, with failed logins
//! rate-limited per user and source.
//!
//! With a directory configured (`[ldap]`) passwords are checked by an LDAP bind
//! ([`crate::directory`]); with none (the embedded default) the TSS checks its own
//! user table (argon2 hashes). Every failure — unknown user, wrong password, empty password,
//! a name that is not an identifier — gets the same answer, [`Error::Unauthenticated`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::model::Role;
use crate::store::Store;

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// Hashes a password for the embedded user table (argon2id, random salt, PHC string).
pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(crate::model::invalid("password", "must not be empty"));
    }
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| crate::model::invalid("password", e.to_string()))
}

fn verify_password(password: &str, hash: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Failed-login policy: after `max_failures` failures within `window` for one
/// (user, source), further attempts are refused until `window` has passed since the
/// last failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottlePolicy {
    pub max_failures: u32,
    pub window_secs: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            max_failures: 5,
            window_secs: 60,
        }
    }
}

/// Most (user, source) pairs tracked; past it, expired entries are dropped and, if
/// still full, the oldest one.
const MAX_TRACKED: usize = 100_000;

/// Sans-IO failed-login counter; `now` comes in as an argument.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    failures: HashMap<(String, IpAddr), (u32, Instant)>,
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        LoginThrottle {
            policy,
            failures: HashMap::new(),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.policy.window_secs)
    }

    /// `Err(seconds to wait)` while `user` from `source` is locked out.
    pub fn check(&self, user: &str, source: IpAddr, now: Instant) -> Result<(), u64> {
        let key = (user.to_ascii_lowercase(), source);
        match self.failures.get(&key) {
            Some(&(count, last)) if count >= self.policy.max_failures => {
                let until = last + self.window();
                if now < until {
                    Err((until - now).as_secs().max(1))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure.
    pub fn failed(&mut self, user: &str, source: IpAddr, now: Instant) {
        let window = self.window();
        if self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, (_, last)| now.duration_since(*last) < window);
            if self.failures.len() >= MAX_TRACKED
                && let Some(oldest) = self
                    .failures
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(k, _)| k.clone())
            {
                self.failures.remove(&oldest);
            }
        }
        let entry = self
            .failures
            .entry((user.to_ascii_lowercase(), source))
            .or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
    }

    /// Clears the count after a successful login.
    pub fn succeeded(&mut self, user: &str, source: IpAddr) {
        self.failures.remove(&(user.to_ascii_lowercase(), source));
    }
}

/// How long a verified (user, password) is remembered, so that the admin API's Basic
/// credentials are not re-hashed on every request.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// Checks logins for the API (and, later, FTPES).
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    directory: Option<Directory>,
    throttle: Mutex<LoginThrottle>,
    verified: Mutex<HashMap<[u8; 32], (Identity, Instant)>>,
    /// Password checks (argon2 at ~19 MiB each, or a directory bind) running at once;
    /// others wait their turn instead of exhausting memory.
    checks: tokio::sync::Semaphore,
}

/// An argon2 hash of a random password: unknown users are checked against it, so a
/// refusal costs the same whether or not the user exists.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let secret: [u8; 16] = rand::random();
        hash_password(&format!("{secret:x?}")).unwrap_or_default()
    })
}

impl Authenticator {
    /// Logins are checked by `directory` when given, else by the store's user table.
    pub fn new(store: Store, policy: ThrottlePolicy, directory: Option<Directory>) -> Self {
        Authenticator {
            store,
            directory,
            throttle: Mutex::new(LoginThrottle::new(policy)),
            verified: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .max(2),
            ),
        }
    }

    /// Checks `user`/`password` from `source`.
    pub async fn login(&self, user: &str, password: &str, source: IpAddr) -> Result<Identity> {
        let now = Instant::now();
        if let Err(retry_after_secs) = lock(&self.throttle).check(user, source, now) {
            return Err(Error::Throttled { retry_after_secs });
        }
        let key = cache_key(user, password);
        if let Some((identity, at)) = lock(&self.verified).get(&key).cloned()
            && now.duration_since(at) < VERIFIED_TTL
        {
            return Ok(identity);
        }
        let _permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| Error::Config("login checks closed".into()))?;
        // Failures recorded while this attempt waited count against it too.
        if let Err(retry_after_secs) = lock(&self.throttle).check(user, source, Instant::now()) {
            return Err(Error::Throttled { retry_after_secs });
        }
        match self.check(user, password).await? {
            Some(identity) => {
                lock(&self.throttle).succeeded(user, source);
                let mut verified = lock(&self.verified);
                if verified.len() >= 10_000 {
                    verified.retain(|_, (_, at)| now.duration_since(*at) < VERIFIED_TTL);
                }
                verified.insert(key, (identity.clone(), now));
                Ok(identity)
            }
            None => {
                lock(&self.throttle).failed(user, source, now);
                tracing::warn!(user = %user.escape_debug(), %source, "login failed");
                Err(Error::Unauthenticated)
            }
        }
    }

    /// The directory or the embedded user table: `None` for any refusal.
    async fn check(&self, user: &str, password: &str) -> Result<Option<Identity>> {
        if let Some(directory) = &self.directory {
            return directory.login(user, password).await;
        }
        // RFC 4513 §5.1.2: an empty password is an unauthenticated bind; refuse it first.
        if password.is_empty() || crate::model::check_id("user", user).is_err() {
            return Ok(None);
        }
        let stored = self.store.password_hash(user).await?;
        let (hash, role) = match &stored {
            Some((hash, role)) => (hash.clone(), Some(*role)),
            None => (decoy_hash().to_owned(), None),
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        Ok(match (ok, role) {
            (true, Some(role)) => Some(Identity {
                name: user.to_owned(),
                role,
            }),
            _ => None,
        })
    }
}

fn cache_key(user: &str, password: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoy_hash_is_real_and_matches_nothing_guessable() {
        assert!(decoy_hash().starts_with("$argon2id$"));
        assert!(!verify_password("", decoy_hash()));
        assert!(!verify_password("admin", decoy_hash()));
    }

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash_password("s3cret").unwrap();
        let b = hash_password("s3cret").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &a));
        assert!(!verify_password("s3cre", &a));
        assert!(hash_password("").is_err());
    }

    #[test]
    fn throttle_locks_after_max_failures_per_user_and_source() {
        let mut t = LoginThrottle::new(ThrottlePolicy {
            max_failures: 3,
            window_secs: 60,
        });
        let src: IpAddr = "127.0.10.1".parse().unwrap();
        let other: IpAddr = "127.0.10.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(t.check("trader01", src, t0).is_ok());
            t.failed("Trader01", src, t0 + Duration::from_secs(i));
        }
        assert_eq!(
            t.check("trader01", src, t0 + Duration::from_secs(3)),
            Err(59)
        );
        assert!(t.check("trader01", other, t0).is_ok(), "another source");
        assert!(t.check("trader02", src, t0).is_ok(), "another user");
        assert!(
            t.check("trader01", src, t0 + Duration::from_secs(62))
                .is_ok()
        );
        t.succeeded("trader01", src);
        assert!(
            t.check("trader01", src, t0 + Duration::from_secs(3))
                .is_ok()
        );
    }

    #[test]
    fn failures_older_than_the_window_start_over() {
        let mut t = LoginThrottle::new(ThrottlePolicy {
            max_failures: 2,
            window_secs: 10,
        });
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        t.failed("u", src, t0);
        t.failed("u", src, t0 + Duration::from_secs(11));
        assert!(t.check("u", src, t0 + Duration::from_secs(12)).is_ok());
    }
}
