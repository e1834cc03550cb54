//! Header-value syntax checks that rsipstack's lenient parser does not make.
//!
//! rsipstack accepts, for example, an unterminated quoted display name, spaces inside
//! `< >`, `;;` in Via, and drops a From tag written `tag = x` (RFC 4475 `wsinv`). These
//! helpers are small scanners over one header value, written by hand because they
//! only decide *whether* a value is well formed (RFC 3261 §25.1) and where its header
//! parameters start; the typed parsing stays rsipstack's.

/// RFC 3261 `token` characters.
pub fn is_token_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_token_byte)
}

/// RFC 3261 `token` bytes (all ASCII): a match, not a search of the punctuation list,
/// as every header check calls it for every character of every token.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// True when `s` is a non-empty RFC 3261 token.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// True when `s` holds a space or a tab.
fn has_whitespace(s: &str) -> bool {
    s.bytes().any(|b| b == b' ' || b == b'\t')
}

/// Splits a header value on commas that are outside quotes and `< >`; each part is
/// trimmed. An iterator, so the hot path allocates nothing.
pub fn split_list(value: &str) -> ListParts<'_> {
    ListParts {
        rest: Some(value),
        // Most values (every Via, most Contacts) hold no quote and no `<`: then every
        // comma separates, and memchr finds it. Looked at once for the whole value.
        plain: memchr::memchr2(b'"', b'<', value.as_bytes()).is_none(),
    }
}

/// Iterator returned by [`split_list`].
#[derive(Debug, Clone)]
pub struct ListParts<'a> {
    rest: Option<&'a str>,
    /// No quote and no `<` anywhere in the value.
    plain: bool,
}

impl<'a> Iterator for ListParts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let value = self.rest?;
        if self.plain {
            return Some(match memchr::memchr(b',', value.as_bytes()) {
                Some(i) => {
                    self.rest = Some(&value[i + 1..]);
                    value[..i].trim_ascii()
                }
                None => {
                    self.rest = None;
                    value.trim_ascii()
                }
            });
        }
        let (mut in_quote, mut escaped, mut depth) = (false, false, 0usize);
        // Bytes, not chars: every delimiter is ASCII, and no byte of a multi-byte UTF-8
        // character is, so each cut falls on a character boundary.
        for (i, &c) in value.as_bytes().iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                b'\\' if in_quote => escaped = true,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => depth += 1,
                b'>' if !in_quote => depth = depth.saturating_sub(1),
                b',' if !in_quote && depth == 0 => {
                    self.rest = Some(&value[i + 1..]);
                    return Some(value[..i].trim_ascii());
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(value.trim_ascii())
    }
}

/// A `name-addr` or `addr-spec` header value split into its parts (§20.10, §25.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name, with quotes if it was quoted.
    pub display_name: Option<&'a str>,
    /// The URI text, without `< >`.
    pub uri: &'a str,
    /// Whether the URI was enclosed in `< >`.
    pub bracketed: bool,
    /// Header parameters, the text after the URI (starting at `;` or empty).
    pub params: &'a str,
}

/// Splits and checks one `name-addr` / `addr-spec` value (From, To, Contact, Route…).
///
/// Refuses what RFC 4475 §3.1.2 calls invalid: an unterminated quote (`quotbal`),
/// unquoted non-token display names (`baddn`), whitespace inside `< >` (`badaspec`),
/// an `addr-spec` holding `?` or `,` (`regbadct`), and empty parameters (`badinv01`).
pub fn parse_name_addr(value: &str) -> Result<NameAddr<'_>, String> {
    // Bytes, not chars, for every search below: all delimiters are ASCII and no byte
    // of a multi-byte character is, so every cut falls on a character boundary. This
    // runs for From, To and each Contact of every message received.
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err("empty value".into());
    }
    let bytes = value.as_bytes();
    let (display_name, rest_start) = if bytes[0] == b'"' {
        let mut escaped = false;
        let mut end = None;
        for (i, &c) in bytes.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                end = Some(i);
                break;
            }
        }
        let end = end.ok_or("unterminated quoted display name")?;
        (Some(&value[..=end]), end + 1)
    } else if let Some(lt) = memchr::memchr(b'<', bytes) {
        let name = value[..lt].trim_ascii();
        if !name.is_empty()
            && !name
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
        {
            return Err(format!("display name {name:?} must be quoted"));
        }
        ((!name.is_empty()).then_some(name), lt)
    } else {
        (None, 0)
    };
    let rest = value[rest_start..].trim_ascii_start();
    let rest_offset = value.len() - rest.len();
    if let Some(inner) = rest.strip_prefix('<') {
        let close = memchr::memchr(b'>', inner.as_bytes()).ok_or("missing '>'")?;
        let uri = &inner[..close];
        if uri.is_empty() || has_whitespace(uri) {
            return Err(format!("whitespace inside <{uri}>"));
        }
        let params = inner[close + 1..].trim_ascii();
        check_params(params)?;
        Ok(NameAddr {
            display_name,
            uri,
            bracketed: true,
            params,
        })
    } else {
        if display_name.is_some() {
            return Err("display name without <URI>".into());
        }
        let rest = &value[rest_offset..];
        let (uri, params) = match memchr::memchr(b';', rest.as_bytes()) {
            Some(i) => (rest[..i].trim_ascii(), rest[i..].trim_ascii()),
            None => (rest.trim_ascii(), ""),
        };
        if uri.is_empty() || has_whitespace(uri) || uri.bytes().any(|b| b == b'<' || b == b'>') {
            return Err(format!("malformed URI {uri:?}"));
        }
        if uri.bytes().any(|b| b == b'?' || b == b',') {
            return Err(format!(
                "URI {uri:?} with '?' or ',' must be enclosed in <>"
            ));
        }
        check_params(params)?;
        Ok(NameAddr {
            display_name: None,
            uri,
            bracketed: false,
            params,
        })
    }
}

/// Checks `;name[=value]` parameter text: no empty names, names are tokens.
fn check_params(params: &str) -> Result<(), String> {
    if params.is_empty() {
        return Ok(());
    }
    let Some(params) = params.strip_prefix(';') else {
        return Err(format!("unexpected text {params:?} after the URI"));
    };
    for param in params.split(';') {
        let name = match memchr::memchr(b'=', param.as_bytes()) {
            Some(i) => &param[..i],
            None => param,
        };
        if !is_token(name.trim_ascii()) {
            return Err(format!("empty or malformed parameter {param:?}"));
        }
    }
    Ok(())
}

/// The user part of a `sip:`/`sips:` URI's text, without its parameters; `None` for
/// other schemes and URIs without one.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// The user part of a parsed SIP or SIPS URI, as it came on the wire, without writing
/// the URI out first when the parser found a user (the common case). Writing it out
/// would add to what [`uri_user`] reads of the text: the password (`sip:7101:pw@h`
/// gave `7101:pw`) and a second percent-encoding (`%2B33` gave `%252B33`); here they
/// read `7101` and `%2B33`. A user with parameters (`sip:+33142685300;npdi@sbc`) the
/// parser leaves in the host part, so the text is read then.
pub fn sip_uri_user(uri: &rsipstack::sip::Uri) -> Option<String> {
    use rsipstack::sip::uri::Scheme;
    if !matches!(uri.scheme, Some(Scheme::Sip | Scheme::Sips)) {
        return None;
    }
    match &uri.auth {
        Some(auth) => {
            let user = auth.user.split(';').next().unwrap_or(&auth.user);
            (!user.is_empty()).then(|| user.to_owned())
        }
        None => uri_user(&uri.to_string()).map(str::to_owned),
    }
}

/// The user part of the URI in a name-addr header value (From, To).
pub fn name_addr_user(value: &str) -> Option<&str> {
    parse_name_addr(value).ok().and_then(|a| uri_user(a.uri))
}

/// Looks up a header parameter (`;name=value`, LWS allowed around `=`) in `params`.
pub fn header_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params
        .split(';')
        .map(str::trim_ascii)
        .filter(|p| !p.is_empty())
        .find_map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            n.trim_ascii()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim_ascii())
        })
}

/// One Via value split, unchecked, as both [`check_via`] and the identifier reads
/// (`MessageIds::read_via`) split it: the sent-protocol at its first two `/` (name,
/// version, then transport and sent-by as one text), each trimmed, `None` without two
/// `/`; and the parameters from the first `;` (or empty).
pub fn split_via_value(part: &str) -> (Option<[&str; 3]>, &str) {
    let (head, params) =
        memchr::memchr(b';', part.as_bytes()).map_or((part, ""), |i| (&part[..i], &part[i..]));
    let mut fields = head.splitn(3, '/').map(str::trim_ascii);
    let protocol = match (fields.next(), fields.next(), fields.next()) {
        (Some(name), Some(version), Some(rest)) => Some([name, version, rest]),
        _ => None,
    };
    (protocol, params)
}

/// The first value of a Via header, as [`check_via`] read it on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaTop<'a> {
    /// host[:port].
    pub sent_by: &'a str,
    /// The parameters, from the first `;` (or empty).
    pub params: &'a str,
}

/// Checks one Via header (possibly several comma-separated values): every value is
/// `SIP/2.0/transport sent-by` followed by non-empty `;params` (`badinv01`). LWS is
/// allowed around the slashes (RFC 4475 `wsinv`). Returns the first value's sent-by
/// and parameters, so the header is not read twice.
pub fn check_via(value: &str) -> Result<ViaTop<'_>, String> {
    let mut top = None;
    for part in split_list(value) {
        if part.is_empty() {
            return Err("empty Via value".into());
        }
        let (protocol, params) = split_via_value(part);
        let Some([proto, version, rest]) = protocol else {
            return Err(format!("Via {part:?}: expected SIP/2.0/transport"));
        };
        if !proto.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return Err(format!("Via {part:?}: unknown protocol {proto}/{version}"));
        }
        let mut words = rest.split_whitespace();
        let (Some(transport), Some(sent_by)) = (words.next(), words.next()) else {
            return Err(format!("Via {part:?}: missing sent-by"));
        };
        if !is_token(transport) || words.next().is_some() {
            return Err(format!(
                "Via {part:?}: malformed transport or sent-by {sent_by:?}"
            ));
        }
        check_params(params.trim_ascii())?;
        top.get_or_insert(ViaTop { sent_by, params });
    }
    top.ok_or_else(|| "empty Via value".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_part_of_uris() {
        use super::{name_addr_user, uri_user};
        assert_eq!(uri_user("sip:dev-T-0001@floorwire"), Some("dev-T-0001"));
        assert_eq!(uri_user("sips:a;x=y@h:5061"), Some("a"));
        assert_eq!(uri_user("sip:floorwire"), None);
        assert_eq!(uri_user("sip:@h"), None);
        assert_eq!(uri_user("tel:+33142685300"), None);
        for text in [
            "sip:dev-T-0001@floorwire",
            "sips:a;x=y@h:5061",
            "sip:+33142685300;npdi@sbc",
            "sip:floorwire",
            "sip:7101@127.0.0.1:5060;transport=udp",
            "tel:+33142685300",
        ] {
            let parsed = rsipstack::sip::Uri::try_from(text).expect("a URI");
            let written = parsed.to_string();
            assert_eq!(
                super::sip_uri_user(&parsed).as_deref(),
                uri_user(&written),
                "{text} ({written})"
            );
        }
        // No password, no second encoding.
        for (text, user) in [
            ("sip:7101:pw@h", "7101"),
            ("sip:%2B33142685300@sbc", "%2B33142685300"),
        ] {
            let parsed = rsipstack::sip::Uri::try_from(text).expect("a URI");
            assert_eq!(
                super::sip_uri_user(&parsed).as_deref(),
                Some(user),
                "{text}"
            );
        }
        assert_eq!(
            name_addr_user("\"Desk\" <sip:7100@tpo>;tag=x"),
            Some("7100")
        );
    }

    use super::*;

    #[test]
    fn name_addr_forms() {
        let n = parse_name_addr("\"A, B\" <sip:a@b>;tag=1").expect("valid");
        assert_eq!(n.uri, "sip:a@b");
        assert_eq!(header_param(n.params, "tag"), Some("1"));
        let n = parse_name_addr("sip:a@b;tag = x").expect("valid");
        assert_eq!(n.uri, "sip:a@b");
        assert_eq!(header_param(n.params, "TAG"), Some("x"));
        assert!(parse_name_addr("\"open <sip:a@b>").is_err());
        assert!(parse_name_addr("Bell, Alexander <sip:a@b>").is_err());
        assert!(parse_name_addr("< sip:a@b >").is_err());
        assert!(parse_name_addr("sip:a@b?Route=x").is_err());
        assert!(parse_name_addr("<sip:a@b>;;;").is_err());
        assert!(parse_name_addr("J Rosenberg <sip:a@b>").is_ok());
    }

    #[test]
    fn lists_split_on_commas_outside_quotes_and_brackets() {
        let parts = |v| split_list(v).collect::<Vec<_>>();
        assert_eq!(parts(" a , b,c "), ["a", "b", "c"]);
        assert_eq!(parts("a,"), ["a", ""]);
        assert_eq!(parts("only"), ["only"]);
        assert_eq!(
            parts("\"B, \\\"x\" <sip:b@h;p=1,2>;q=1, <sip:c@h>"),
            ["\"B, \\\"x\" <sip:b@h;p=1,2>;q=1", "<sip:c@h>"]
        );
        // A plain part before one that needs the careful read.
        assert_eq!(
            parts("sip:a@h, \"C, D\" <sip:c@h>"),
            ["sip:a@h", "\"C, D\" <sip:c@h>"]
        );
    }

    #[test]
    fn via_forms() {
        assert!(check_via("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(check_via("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").is_ok());
        assert_eq!(
            check_via("SIP/2.0/UDP a:5060 ;branch=z9hG4bK1, SIP/2.0/TCP b"),
            Ok(ViaTop {
                sent_by: "a:5060",
                params: ";branch=z9hG4bK1"
            })
        );
        assert!(check_via("SIP/2.0/UDP").is_err());
    }
}
