//! Identifiers as newtypes (RFC 3261 §8.1.1, §17.1.3, §19.3) and their extraction.

use std::fmt;

use compact_str::{CompactString, format_compact};

use rsipstack::sip::{HasHeaders, Header, Method};

/// RFC 3261 magic cookie opening every compliant branch (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(CompactString);

        impl $name {
            /// Wraps a value taken from the wire.
            pub fn new(value: impl Into<CompactString>) -> Self {
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
        Self(format_compact!(
            "{MAGIC_COOKIE}{:016x}",
            rand::random::<u64>()
        ))
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
        Self(format_compact!("{:08x}", rand::random::<u32>()))
    }
}

impl CallId {
    /// A fresh Call-ID at `host`.
    pub fn generate(host: &str) -> Self {
        Self(format_compact!("{:016x}@{host}", rand::random::<u64>()))
    }
}

/// The identifiers of one message, read tolerantly (LWS around `=`, compact names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageIds {
    pub call_id: Option<CallId>,
    pub from_tag: Option<Tag>,
    pub to_tag: Option<Tag>,
    /// CSeq sequence number and method text.
    pub cseq: Option<(u32, CompactString)>,
    /// Branch of the top Via value.
    pub branch: Option<Branch>,
    /// sent-by of the top Via value (host[:port]), whitespace removed.
    pub sent_by: Option<CompactString>,
}

impl MessageIds {
    /// Reads the identifiers of a message's headers.
    pub fn of(message: &impl HasHeaders) -> Self {
        Self::read(message, true)
    }

    /// The dialog's identifiers only (Call-ID, tags, CSeq): `branch` and `sent_by` stay
    /// `None`, the top Via is not read (the costly part, for a dialog that needs none of
    /// it).
    pub fn of_dialog(message: &impl HasHeaders) -> Self {
        Self::read(message, false)
    }

    /// The branch and sent-by of a Via header's first value, split as
    /// [`check_via`](super::syntax::check_via) splits it
    /// ([`split_via_value`](super::syntax::split_via_value)), without its checks.
    pub fn read_via(value: &str) -> (Option<Branch>, Option<CompactString>) {
        let (protocol, params) = top_via(value);
        let sent_by = protocol
            .and_then(|[_, _, rest]| rest.split_whitespace().nth(1))
            .map(CompactString::from);
        (branch_in(params), sent_by)
    }

    fn read(message: &impl HasHeaders, via: bool) -> Self {
        let mut ids = Self::default();
        // Only the first Via header is read, whatever it holds (as the ingress checks do).
        let mut via_read = !via;
        for header in message.headers().iter() {
            match header {
                Header::CallId(v) if ids.call_id.is_none() => {
                    ids.call_id = Some(CallId::new(v.value().trim_ascii()));
                }
                Header::From(v) if ids.from_tag.is_none() => ids.from_tag = tag_of(v.value()),
                Header::To(v) if ids.to_tag.is_none() => ids.to_tag = tag_of(v.value()),
                Header::CSeq(v) if ids.cseq.is_none() => ids.cseq = parse_cseq(v.value()),
                Header::Via(v) if !via_read => {
                    via_read = true;
                    (ids.branch, ids.sent_by) = Self::read_via(v.value());
                }
                _ => {}
            }
        }
        ids
    }
}

/// The To tag of a message, reading its To header only (cheaper than
/// [`MessageIds::of`] where only that is wanted).
pub fn to_tag(message: &impl HasHeaders) -> Option<Tag> {
    message.headers().iter().find_map(|h| match h {
        Header::To(v) => Some(tag_of(v.value())),
        _ => None,
    })?
}

/// The branch of a message's top Via, reading that header only.
pub fn top_branch(message: &impl HasHeaders) -> Option<Branch> {
    let via = message.headers().iter().find_map(|h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })?;
    branch_in(top_via(via).1)
}

/// The first value of a Via header, split
/// ([`split_via_value`](super::syntax::split_via_value)).
fn top_via(value: &str) -> (Option<[&str; 3]>, &str) {
    super::syntax::split_via_value(super::syntax::split_list(value).next().unwrap_or_default())
}

/// The non-empty `branch` among a Via value's parameters.
pub(crate) fn branch_in(params: &str) -> Option<Branch> {
    super::syntax::header_param(params, "branch")
        .filter(|b| !b.is_empty())
        .map(Branch::new)
}

/// The Call-ID and CSeq number of a message, reading those two headers only.
pub fn call_id_and_seq(message: &impl HasHeaders) -> Option<(CallId, u32)> {
    let (mut call_id, mut seq) = (None, None);
    for header in message.headers().iter() {
        match header {
            Header::CallId(v) if call_id.is_none() => {
                call_id = Some(CallId::new(v.value().trim_ascii()));
            }
            Header::CSeq(v) if seq.is_none() => seq = parse_cseq(v.value()).map(|(n, _)| n),
            _ => {}
        }
    }
    Some((call_id?, seq?))
}

/// The `tag` parameter of a From/To value.
pub fn tag_of(value: &str) -> Option<Tag> {
    let params = if value.contains('"') {
        // A quoted display name may hold `<`, `>` or `;`: the full split.
        super::syntax::parse_name_addr(value).ok()?.params
    } else if let Some(open) = value.find('<') {
        // `name <uri>;params`: the parameters follow the first `>`.
        let close = open + value[open..].find('>')?;
        &value[close + 1..]
    } else {
        // `uri;params`: an addr-spec has no header parameters before its first `;`.
        value.find(';').map_or("", |at| &value[at..])
    };
    super::syntax::header_param(params, "tag")
        .filter(|t| !t.is_empty())
        .map(Tag::new)
}

/// A method's name as on the wire, without formatting it into a new `String`.
pub fn method_name(method: Method) -> &'static str {
    match method {
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Info => "INFO",
        Method::Invite => "INVITE",
        Method::Message => "MESSAGE",
        Method::Notify => "NOTIFY",
        Method::Options => "OPTIONS",
        Method::PRack => "PRACK",
        Method::Publish => "PUBLISH",
        Method::Refer => "REFER",
        Method::Register => "REGISTER",
        Method::Subscribe => "SUBSCRIBE",
        Method::Update => "UPDATE",
    }
}

/// `CSeq: number method`, with leading zeros allowed and numbers above 2^32-1 refused
/// (RFC 4475 `scalar02`).
pub fn parse_cseq(value: &str) -> Option<(u32, CompactString)> {
    let mut words = value.split_whitespace();
    let number = words.next()?.parse::<u32>().ok()?;
    let method = words.next()?;
    if words.next().is_some() || !super::syntax::is_token(method) {
        return None;
    }
    Some((number, CompactString::from(method)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method's name is what rsipstack writes for it.
    #[test]
    fn method_names_are_what_rsipstack_writes() {
        for method in Method::all() {
            assert_eq!(method_name(method), method.to_string());
        }
    }

    /// The quick scan finds the tag the full name-addr split finds, in every form a
    /// From/To value takes (RFC 4475 `wsinv`'s `tag = x` included).
    #[test]
    fn tag_of_agrees_with_the_full_split() {
        let full = |v: &str| {
            let parts = crate::sip::syntax::parse_name_addr(v).ok()?;
            crate::sip::syntax::header_param(parts.params, "tag").map(str::to_owned)
        };
        for value in [
            "<sip:a@b>;tag=1",
            "sip:a@b;tag=2",
            "sip:a@b ; tag = 3 ; x=y",
            "Trader One <sip:a@b;tag=inside>;tag=4",
            "<sip:a@b;tag=inside>",
            "\"A <x>; tag=no\" <sip:a@b>;tag=5",
            "\"A, B\" <sip:a@b>;TAG=6",
            "<sip:a@b>",
            "sip:a@b",
            "<sip:a@b>;tag=",
        ] {
            assert_eq!(
                tag_of(value).map(|t| t.as_str().to_owned()),
                full(value).filter(|t| !t.is_empty()),
                "{value}"
            );
        }
    }
    /// Only the first Via header counts: when it has no branch, the second's is not
    /// taken; a `/` in the sent-by host is split as the ingress check splits it, and
    /// the identifiers read afterwards equal those the check returned.
    #[test]
    fn only_the_first_via_is_read_and_split_as_checked() {
        assert_eq!(
            MessageIds::read_via("SIP/2.0/UDP h/x:5060"),
            (None, Some("h/x:5060".into()))
        );
        assert_eq!(
            MessageIds::read_via("SIP / 2.0 / UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP b"),
            (Some(Branch::new("z9hG4bK1")), Some("10.0.0.1:5060".into()))
        );
        let message = b"OPTIONS sip:tpo SIP/2.0\r\n\
Via: SIP/2.0/UDP h/x:5060\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKsecond\r\n\
From: <sip:a@b>;tag=1\r\n\
To: <sip:tpo>\r\n\
Call-ID: c1\r\n\
CSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";
        let (inbound, checked) =
            crate::sip::ingress::parse_datagram_with_ids(message).expect("valid OPTIONS");
        let crate::sip::Inbound::Request(request) = inbound else {
            panic!("a request")
        };
        assert_eq!(checked.branch, None);
        assert_eq!(checked.sent_by.as_deref(), Some("h/x:5060"));
        assert_eq!(MessageIds::of(&request), checked);
    }
}
