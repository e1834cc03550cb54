//! Digest authentication, both sides (RFC 3261 §22, RFC 7616 with RFC 2617's MD5).
//!
//! The server keeps no per-nonce state: a nonce is `timestamp.hmac` where the MAC is
//! SHA-256 over a process secret, the timestamp and the realm, so any instance holding
//! the secret can check it and an expired one is answered `stale=true`. Passwords are
//! never needed server-side: verification works from the stored HA1.
//!
//! The `Digest` parameter list is parsed here rather than with rsipstack's typed
//! `Authorization`, which does not carry SHA-256 (RFC 8760) through.

use md5::Md5;
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// Digest algorithms supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The token used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            s if s.eq_ignore_ascii_case("MD5") => Ok(Self::Md5),
            s if s.eq_ignore_ascii_case("SHA-256") => Ok(Self::Sha256),
            other => Err(Error::Auth(format!("unsupported algorithm {other}"))),
        }
    }

    /// Hex digest of `data` with this algorithm.
    pub fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 => hex(&Md5::digest(data.as_bytes())),
            Self::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `HA1 = H(username:realm:password)`, what a credential store keeps.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&format!("{username}:{realm}:{password}"))
}

/// A `WWW-Authenticate` / `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `qop="auth"` offered (always, from our servers).
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    /// The header value.
    pub fn to_header_value(&self) -> String {
        let mut v = format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.as_str()
        );
        if self.qop_auth {
            v.push_str(", qop=\"auth\"");
        }
        if let Some(opaque) = &self.opaque {
            v.push_str(&format!(", opaque=\"{opaque}\""));
        }
        if self.stale {
            v.push_str(", stale=true");
        }
        v
    }

    /// Parses a challenge header value.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let params = digest_params(value)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Ok(Self {
            realm: get("realm").ok_or_else(|| Error::Auth("challenge without realm".into()))?,
            nonce: get("nonce").ok_or_else(|| Error::Auth("challenge without nonce".into()))?,
            opaque: get("opaque"),
            algorithm: get("algorithm").map_or(Ok(Algorithm::Md5), |a| Algorithm::parse(&a))?,
            qop_auth: get("qop")
                .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// `Authorization` / `Proxy-Authorization` Digest credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop_auth: bool,
    pub opaque: Option<String>,
}

impl Credentials {
    /// Answers `challenge` for a request (`method`, Request-URI `uri`) — the client side.
    pub fn answer(
        challenge: &Challenge,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> Self {
        let ha1 = ha1(challenge.algorithm, username, &challenge.realm, password);
        let nc = format!("{nc:08x}");
        let (cnonce, nc) = if challenge.qop_auth {
            (Some(cnonce.to_owned()), Some(nc))
        } else {
            (None, None)
        };
        let response = response(
            challenge.algorithm,
            &ha1,
            &challenge.nonce,
            nc.as_deref().zip(cnonce.as_deref()),
            method,
            uri,
        );
        Self {
            username: username.to_owned(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_owned(),
            response,
            algorithm: challenge.algorithm,
            cnonce,
            nc,
            qop_auth: challenge.qop_auth,
            opaque: challenge.opaque.clone(),
        }
    }

    /// The header value.
    pub fn to_header_value(&self) -> String {
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            self.username,
            self.realm,
            self.nonce,
            self.uri,
            self.response,
            self.algorithm.as_str()
        );
        if let (true, Some(cnonce), Some(nc)) = (self.qop_auth, &self.cnonce, &self.nc) {
            v.push_str(&format!(", qop=auth, cnonce=\"{cnonce}\", nc={nc}"));
        }
        if let Some(opaque) = &self.opaque {
            v.push_str(&format!(", opaque=\"{opaque}\""));
        }
        v
    }

    /// Parses a credentials header value; refuses non-Digest schemes.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let params = digest_params(value)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let need = |k: &str| get(k).ok_or_else(|| Error::Auth(format!("credentials without {k}")));
        Ok(Self {
            username: need("username")?,
            realm: need("realm")?,
            nonce: need("nonce")?,
            uri: need("uri")?,
            response: need("response")?,
            algorithm: get("algorithm").map_or(Ok(Algorithm::Md5), |a| Algorithm::parse(&a))?,
            cnonce: get("cnonce"),
            nc: get("nc"),
            qop_auth: get("qop").is_some_and(|q| q.eq_ignore_ascii_case("auth")),
            opaque: get("opaque"),
        })
    }
}

/// `KD(HA1, nonce[:nc:cnonce:qop]:HA2)` with `HA2 = H(method:uri)`.
pub fn response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    nc_cnonce: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    match nc_cnonce {
        Some((nc, cnonce)) => algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Splits `Digest a=b, c="d, e"` into name/value pairs (quotes removed).
fn digest_params(value: &str) -> Result<Vec<(String, String)>, Error> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(Error::Auth(format!("unsupported scheme {scheme}")));
    }
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_owned();
        if name.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            let mut closed = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (true, c) => {
                        val.push(c);
                        escaped = false;
                    }
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        closed = true;
                        break;
                    }
                    (false, c) => val.push(c),
                }
            }
            if !closed {
                return Err(Error::Auth(format!("unterminated quoted value for {name}")));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_owned();
        }
        params.push((name, val));
    }
    Ok(params)
}

/// Equality that takes the same time wherever the strings differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Issues and checks stateless nonces.
#[derive(Debug, Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    lifetime_secs: u64,
}

impl NonceIssuer {
    /// With a random secret and a nonce lifetime.
    pub fn new(lifetime_secs: u64) -> Self {
        Self {
            secret: rand::random(),
            lifetime_secs,
        }
    }

    fn mac(&self, timestamp: u64, realm: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(timestamp.to_be_bytes());
        h.update(realm.as_bytes());
        hex(&h.finalize()[..16])
    }

    /// A nonce for `realm` minted at `now_unix` (seconds).
    pub fn issue(&self, realm: &str, now_unix: u64) -> String {
        format!("{now_unix:x}.{}", self.mac(now_unix, realm))
    }

    /// `Some(true)` fresh, `Some(false)` ours but expired, `None` not ours.
    pub fn check(&self, nonce: &str, realm: &str, now_unix: u64) -> Option<bool> {
        let (ts, mac) = nonce.split_once('.')?;
        let ts = u64::from_str_radix(ts, 16).ok()?;
        constant_time_eq(&self.mac(ts, realm), mac)
            .then(|| now_unix.saturating_sub(ts) <= self.lifetime_secs)
    }
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Credentials good for this user.
    Authenticated { username: String },
    /// Answer 401 (or 407 for a proxy) with this challenge.
    Challenge(Challenge),
    /// Credentials present and well formed but wrong: 403.
    Forbidden,
}

/// Server side of digest: checks a request's `Authorization` against stored HA1s.
#[derive(Debug, Clone)]
pub struct DigestServer {
    pub realm: String,
    pub algorithm: Algorithm,
    pub nonces: NonceIssuer,
}

impl DigestServer {
    /// A server for `realm` with nonces valid `nonce_lifetime_secs`.
    pub fn new(realm: impl Into<String>, algorithm: Algorithm, nonce_lifetime_secs: u64) -> Self {
        Self {
            realm: realm.into(),
            algorithm,
            nonces: NonceIssuer::new(nonce_lifetime_secs),
        }
    }

    /// A fresh challenge.
    pub fn challenge(&self, now_unix: u64, stale: bool) -> Challenge {
        Challenge {
            realm: self.realm.clone(),
            nonce: self.nonces.issue(&self.realm, now_unix),
            opaque: None,
            algorithm: self.algorithm,
            qop_auth: true,
            stale,
        }
    }

    /// Checks the credentials in `authorization` (the header value, if any) for a
    /// request `method` to `request_uri` (which the credentials' `uri` must equal,
    /// RFC 7616 §3.4.6); `lookup_ha1(username)` returns the stored HA1 for this realm
    /// and algorithm. Unknown users and wrong passwords both give `Forbidden`, so the
    /// answer says nothing about which users exist.
    ///
    /// Nonces are stateless and nonce counts are not tracked: a captured header can be
    /// replayed for the same method and URI until its nonce expires. Keep the lifetime
    /// short (it is the `DigestServer::new` argument).
    pub fn verify(
        &self,
        authorization: Option<&str>,
        method: &str,
        request_uri: &str,
        now_unix: u64,
        lookup_ha1: impl FnOnce(&str) -> Option<String>,
    ) -> AuthVerdict {
        let Some(value) = authorization else {
            return AuthVerdict::Challenge(self.challenge(now_unix, false));
        };
        let Ok(credentials) = Credentials::parse(value) else {
            // Unknown scheme or unusable parameters (RFC 4475 regaut01): challenge
            // with a scheme we know.
            return AuthVerdict::Challenge(self.challenge(now_unix, false));
        };
        if credentials.uri != request_uri {
            return AuthVerdict::Forbidden;
        }
        if credentials.realm != self.realm || credentials.algorithm != self.algorithm {
            return AuthVerdict::Challenge(self.challenge(now_unix, false));
        }
        match self.nonces.check(&credentials.nonce, &self.realm, now_unix) {
            None => return AuthVerdict::Challenge(self.challenge(now_unix, false)),
            Some(false) => return AuthVerdict::Challenge(self.challenge(now_unix, true)),
            Some(true) => {}
        }
        let Some(ha1) = lookup_ha1(&credentials.username) else {
            return AuthVerdict::Forbidden;
        };
        let nc_cnonce = match (credentials.qop_auth, &credentials.nc, &credentials.cnonce) {
            (true, Some(nc), Some(cnonce)) => Some((nc.as_str(), cnonce.as_str())),
            (true, _, _) => return AuthVerdict::Forbidden,
            (false, _, _) => None,
        };
        let expected = response(
            self.algorithm,
            &ha1,
            &credentials.nonce,
            nc_cnonce,
            method,
            &credentials.uri,
        );
        if constant_time_eq(&expected, &credentials.response.to_ascii_lowercase()) {
            AuthVerdict::Authenticated {
                username: credentials.username,
            }
        } else {
            AuthVerdict::Forbidden
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5's worked example.
    #[test]
    fn rfc2617_example() {
        let ha1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let r = response(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 §3.9.1's SHA-256 example.
    #[test]
    fn rfc7616_sha256_example() {
        let ha1 = ha1(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let r = response(
            Algorithm::Sha256,
            &ha1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(
            r,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn round_trip_both_algorithms() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let server = DigestServer::new("floorwire", algorithm, 300);
            let AuthVerdict::Challenge(ch) =
                server.verify(None, "REGISTER", "sip:floorwire", 1000, |_| None)
            else {
                panic!("expected a challenge");
            };
            let ch = Challenge::parse(&ch.to_header_value()).expect("parse own challenge");
            let creds =
                Credentials::answer(&ch, "dev1", "s3cret", "REGISTER", "sip:floorwire", "abc", 1);
            let header = creds.to_header_value();
            let stored = ha1(algorithm, "dev1", "floorwire", "s3cret");
            assert_eq!(
                server.verify(Some(&header), "REGISTER", "sip:floorwire", 1010, |_| Some(
                    stored.clone()
                )),
                AuthVerdict::Authenticated {
                    username: "dev1".into()
                }
            );
            let wrong = ha1(algorithm, "dev1", "floorwire", "other");
            assert_eq!(
                server.verify(Some(&header), "REGISTER", "sip:floorwire", 1010, |_| Some(
                    wrong
                )),
                AuthVerdict::Forbidden
            );
            assert!(matches!(
                server.verify(Some(&header), "REGISTER", "sip:floorwire", 5000, |_| Some(
                    stored.clone()
                )),
                AuthVerdict::Challenge(Challenge { stale: true, .. })
            ));
            // Credentials for another Request-URI are refused (RFC 7616 §3.4.6).
            assert_eq!(
                server.verify(Some(&header), "REGISTER", "sip:elsewhere", 1010, |_| Some(
                    stored.clone()
                )),
                AuthVerdict::Forbidden
            );
        }
    }

    #[test]
    fn unknown_scheme_is_challenged() {
        let server = DigestServer::new("r", Algorithm::Md5, 60);
        assert!(matches!(
            server.verify(
                Some("NoOneKnowsThisScheme opaque-data=here"),
                "REGISTER",
                "sip:r",
                0,
                |_| None
            ),
            AuthVerdict::Challenge(_)
        ));
    }
}
