//! Identifiers as newtypes (RFC 3261 §8.1.1, §17.1.3, §19.3) and their extraction.

use std::fmt;

use rsipstack::sip::{HasHeaders, Header};

/// RFC 3261 magic cookie opening every compliant branch (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value taken from the wire.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The value as sent on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// A Call-ID header value.
    CallId
);
id_newtype!(
    /// A Via branch parameter.
    Branch
);
id_newtype!(
    /// A From or To tag.
    Tag
);

impl Branch {
    /// A fresh RFC 3261 branch: magic cookie plus 64 random bits.
    pub fn generate() -> Self {
        Self(format!("{MAGIC_COOKIE}{:016x}", rand::random::<u64>()))
    }
    /// True when the branch carries the RFC 3261 magic cookie *and* an identifier
    /// after it; a bare `z9hG4bK` (RFC 4475 `badbranch`) is treated as RFC 2543.
    pub fn is_rfc3261(&self) -> bool {
        self.0.len() > MAGIC_COOKIE.len() && self.0.starts_with(MAGIC_COOKIE)
    }
}

impl Tag {
    /// A fresh local tag (32 random bits are enough, §19.3).
    pub fn generate() -> Self {
        Self(format!("{:08x}", rand::random::<u32>()))
    }
}

impl CallId {
    /// A fresh Call-ID at `host`.
    pub fn generate(host: &str) -> Self {
        Self(format!("{:016x}@{host}", rand::random::<u64>()))
    }
}

/// The identifiers of one message, read tolerantly (LWS around `=`, compact names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageIds {
    pub call_id: Option<CallId>,
    pub from_tag: Option<Tag>,
    pub to_tag: Option<Tag>,
    /// CSeq sequence number and method text.
    pub cseq: Option<(u32, String)>,
    /// Branch of the top Via value.
    pub branch: Option<Branch>,
    /// sent-by of the top Via value (host[:port]), whitespace removed.
    pub sent_by: Option<String>,
}

impl MessageIds {
    /// Reads the identifiers of a message's headers.
    pub fn of(message: &impl HasHeaders) -> Self {
        let mut ids = Self::default();
        for header in message.headers().iter() {
            match header {
                Header::CallId(v) if ids.call_id.is_none() => {
                    ids.call_id = Some(CallId::new(v.value().trim()));
                }
                Header::From(v) if ids.from_tag.is_none() => ids.from_tag = tag_of(v.value()),
                Header::To(v) if ids.to_tag.is_none() => ids.to_tag = tag_of(v.value()),
                Header::CSeq(v) if ids.cseq.is_none() => ids.cseq = parse_cseq(v.value()),
                Header::Via(v) if ids.branch.is_none() && ids.sent_by.is_none() => {
                    let top = super::syntax::split_list(v.value())
                        .next()
                        .unwrap_or_default();
                    let (head, params) = top.split_once(';').unwrap_or((top, ""));
                    ids.branch = super::syntax::header_param(params, "branch")
                        .filter(|b| !b.is_empty())
                        .map(Branch::new);
                    ids.sent_by = head
                        .rsplit('/')
                        .next()
                        .and_then(|t| t.split_whitespace().nth(1))
                        .map(str::to_owned);
                }
                _ => {}
            }
        }
        ids
    }
}

/// The `tag` parameter of a From/To value.
pub fn tag_of(value: &str) -> Option<Tag> {
    let parts = super::syntax::parse_name_addr(value).ok()?;
    super::syntax::header_param(parts.params, "tag")
        .filter(|t| !t.is_empty())
        .map(Tag::new)
}

/// `CSeq: number method`, with leading zeros allowed and numbers above 2^32-1 refused
/// (RFC 4475 `scalar02`).
pub fn parse_cseq(value: &str) -> Option<(u32, String)> {
    let mut words = value.split_whitespace();
    let number = words.next()?.parse::<u32>().ok()?;
    let method = words.next()?;
    if words.next().is_some() || !super::syntax::is_token(method) {
        return None;
    }
    Some((number, method.to_owned()))
}
