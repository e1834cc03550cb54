//! One datagram in, one verdict out: a request or response fit for the transaction
//! layer, or a rejection naming the status to answer with (or to drop silently).
//!
//! The verdicts follow RFC 4475 §3 and RFC 5118: malformed requests get 400, an
//! unknown SIP version 505, an extension method we cannot represent 501; malformed
//! responses are dropped (§16.7 / §18.1.2: nobody to answer to).

use std::borrow::Cow;

use rsipstack::sip::{Header, Method, Request, Response, SipMessage, headers::untyped::Allow};

use super::framing::{FramingError, find_head_end, first_line_len, frame_datagram};
use super::ids::{CallId, MessageIds, Tag, branch_in, parse_cseq};
use super::reply::{response_to, with_header};
use super::syntax::{check_via, header_param, is_token, parse_name_addr, split_list};

/// Methods this stack implements, for `Allow` in 405/501 answers.
pub const ALLOWED_METHODS: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, REFER, NOTIFY, SUBSCRIBE, MESSAGE";

/// A message that passed framing and validation.
#[derive(Debug, Clone)]
pub enum Inbound {
    Request(Request),
    Response(Response),
    /// CRLF keep-alive; nothing to do.
    KeepAlive,
}

/// What to do with a message that failed: answer it with `status`, or drop it.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `Some(code)`: answer with this status; `None`: drop silently.
    pub status: Option<u16>,
    /// Why, for logs and a Warning header.
    pub detail: String,
    /// The request's headers read leniently, to build the answer from; its start line
    /// is not the peer's when that line was the problem.
    pub head: Option<Box<Request>>,
}

impl Rejection {
    fn drop(detail: impl Into<String>) -> Self {
        Self {
            status: None,
            detail: detail.into(),
            head: None,
        }
    }

    fn reply(status: u16, detail: impl Into<String>, head: Option<Request>) -> Self {
        let head = head.filter(has_reply_headers).map(Box::new);
        Self {
            status: head.is_some().then_some(status),
            detail: detail.into(),
            head,
        }
    }

    /// The response to send, when there is one: a stateless answer with a fresh To tag,
    /// `Allow` on 501/405, and a `Warning: 399` carrying the reason.
    pub fn response(&self) -> Option<Response> {
        let (status, head) = (self.status?, self.head.as_ref()?);
        let mut response = response_to(head, status, Some(&Tag::generate()));
        if matches!(status, 405 | 501) {
            response = with_header(response, Header::Allow(Allow::new(ALLOWED_METHODS)));
        }
        let warning = self.detail.replace(['"', '\\', '\r', '\n'], "'");
        with_header(
            response,
            Header::Warning(format!("399 floorwire \"{warning}\"").into()),
        )
        .into()
    }
}

/// A stateless answer needs at least a Via to be routed back.
fn has_reply_headers(request: &Request) -> bool {
    request.headers.iter().any(|h| matches!(h, Header::Via(_)))
}

/// Frames, parses and validates one UDP datagram.
pub fn parse_datagram(datagram: &[u8]) -> Result<Inbound, Rejection> {
    parse_datagram_with_ids(datagram).map(|(inbound, _)| inbound)
}

/// [`parse_datagram`], with the message's identifiers as its checks read them (what
/// [`MessageIds::of`] would read again; default for a keep-alive).
pub fn parse_datagram_with_ids(datagram: &[u8]) -> Result<(Inbound, MessageIds), Rejection> {
    match frame_datagram(datagram) {
        Ok(message) => parse_message_with_ids(message),
        Err(FramingError::KeepAlive) => Ok((Inbound::KeepAlive, MessageIds::default())),
        Err(FramingError::NoHeaderEnd) => Err(Rejection::drop("no end of headers")),
        Err(e @ FramingError::TooLarge(_)) => {
            Err(Rejection::reply(513, e.to_string(), lenient_head(datagram)))
        }
        Err(e) => {
            let start = datagram
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(0);
            if datagram[start..].starts_with(b"SIP/") {
                Err(Rejection::drop(e.to_string()))
            } else {
                Err(Rejection::reply(400, e.to_string(), lenient_head(datagram)))
            }
        }
    }
}

/// Parses and validates one framed message (from [`frame_datagram`] or a stream's
/// `StreamFramer`).
pub fn parse_message(message: &[u8]) -> Result<Inbound, Rejection> {
    parse_message_with_ids(message).map(|(inbound, _)| inbound)
}

/// [`parse_message`], with the identifiers its checks read.
pub fn parse_message_with_ids(message: &[u8]) -> Result<(Inbound, MessageIds), Rejection> {
    let Some(head @ (head_len, _)) = find_head_end(message) else {
        return Err(Rejection::drop("no end of headers"));
    };
    let start_line_end = first_line_len(message).unwrap_or(head_len);
    let Ok(start_line) = std::str::from_utf8(&message[..start_line_end]) else {
        return Err(Rejection::drop("start line is not UTF-8"));
    };
    if start_line.starts_with("SIP/") {
        return parse_response(message, head, start_line);
    }
    let mut result = parse_request(message, head, start_line);
    // An ACK is never answered (§17.1.1.3, §17.2.1): a bad one is dropped.
    if let Err(rejection) = &mut result
        && start_line.starts_with("ACK ")
    {
        rejection.status = None;
    }
    result
}

/// `head` is `(head_len, body_start)` from [`find_head_end`], found once per message.
fn parse_response(
    message: &[u8],
    head: (usize, usize),
    start_line: &str,
) -> Result<(Inbound, MessageIds), Rejection> {
    let mut parts = start_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(Rejection::drop(format!("response version {version}")));
    }
    let code_ok = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && (100..=699).contains(&code.parse::<u16>().unwrap_or(0));
    if !code_ok {
        return Err(Rejection::drop(format!(
            "status code {code:?} out of range"
        )));
    }
    let response = match SipMessage::try_from(tolerate_ipv6(message, head.0).as_ref()) {
        Ok(SipMessage::Response(r)) => r,
        Ok(SipMessage::Request(_)) => return Err(Rejection::drop("not a response")),
        Err(e) => return Err(Rejection::drop(e.to_string())),
    };
    let mut response = response;
    // As for requests (see `parse_request`): framing decided the body.
    response.body = message[head.1..].to_vec();
    let ids = check_headers(&response.headers).map_err(Rejection::drop)?;
    Ok((Inbound::Response(response), ids))
}

fn parse_request(
    message: &[u8],
    head: (usize, usize),
    start_line: &str,
) -> Result<(Inbound, MessageIds), Rejection> {
    let parts: Vec<&str> = start_line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || p.contains('\t')) {
        return Err(Rejection::reply(
            400,
            "Request-Line must be method SP Request-URI SP SIP-Version",
            lenient_head(message),
        ));
    }
    let (method, uri, version) = (parts[0], parts[1], parts[2]);
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        let looks_like_version = version
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
            && version[4..].split('.').count() == 2
            && version[4..]
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let status = if looks_like_version { 505 } else { 400 };
        return Err(Rejection::reply(
            status,
            format!("SIP version {version} not supported"),
            lenient_head(message),
        ));
    }
    if !is_token(method) {
        return Err(Rejection::reply(
            400,
            format!("method {method:?} is not a token"),
            lenient_head(message),
        ));
    }
    check_request_uri(uri).map_err(|e| Rejection::reply(400, e, lenient_head(message)))?;
    if method.parse::<Method>().is_err() {
        return Err(Rejection::reply(
            501,
            format!("method {method} not implemented"),
            lenient_head(message),
        ));
    }
    let request = match SipMessage::try_from(tolerate_ipv6(message, head.0).as_ref()) {
        Ok(SipMessage::Request(r)) => r,
        Ok(SipMessage::Response(_)) => return Err(Rejection::drop("not a request")),
        Err(e) => return Err(Rejection::reply(400, e.to_string(), lenient_head(message))),
    };
    let mut request = request;
    // The body is everything after the empty line: rsipstack reads a missing
    // Content-Length as 0, but over UDP the body is then the rest of the datagram
    // (§18.3, RFC 4475 `inv2543`), and framing has already cut the message to size.
    request.body = message[head.1..].to_vec();
    repair_user_part(&mut request.uri, uri);
    let ids = match check_headers(&request.headers) {
        Ok(ids) => ids,
        Err(e) => return Err(Rejection::reply(400, e, Some(request))),
    };
    if let Some((_, cseq_method)) = &ids.cseq
        && cseq_method != method
    {
        return Err(Rejection::reply(
            400,
            format!("CSeq method {cseq_method} does not match {method}"),
            Some(request),
        ));
    }
    Ok((Inbound::Request(request), ids))
}

/// rsipstack reads `sip:user;par=u%40example.net@example.com` (RFC 4475 `semiuri`) as
/// host `user` with a parameter; RFC 3261's user part may hold `;`. When the text has
/// a user part (an `@` after the scheme) and the parse lost it, re-parse the host part
/// alone and put the user back.
fn repair_user_part(uri: &mut rsipstack::sip::Uri, text: &str) {
    if uri.auth.is_some() {
        return;
    }
    let Some((scheme, rest)) = text.split_once(':') else {
        return;
    };
    let Some((user, host)) = rest.rsplit_once('@') else {
        return;
    };
    if let Ok(mut fixed) = rsipstack::sip::Uri::try_from(format!("{scheme}:{host}").as_str()) {
        fixed.auth = Some(rsipstack::sip::Auth::from(user));
        *uri = fixed;
    }
}

/// Request-URI checks beyond rsipstack's parse: no `< >` (`ltgtruri`), no escaped
/// headers in a SIP URI (`escruri`, §19.1.5), IPv6 hosts bracketed (RFC 5118 §4.2).
fn check_request_uri(uri: &str) -> Result<(), String> {
    if uri.starts_with('<') || uri.ends_with('>') {
        return Err("Request-URI enclosed in <>".into());
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("Request-URI {uri:?} has no scheme"));
    };
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let after_user = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if after_user.contains('?') {
            return Err("escaped headers are not allowed in a Request-URI".into());
        }
        let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host_port = host_port.split(';').next().unwrap_or("");
        if !host_port.starts_with('[') && host_port.matches(':').count() > 1 {
            return Err(format!("IPv6 reference {host_port:?} must be in [ ]"));
        }
    }
    Ok(())
}

/// Header checks (RFC 3261 §8.1.1, §20, RFC 4475 §3.1.2 and §3.3.8).
/// Checks the headers; on success, the message's identifiers as they were read (each
/// of From, To, Call-ID and CSeq is there exactly once; the Via read is the first).
fn check_headers(headers: &rsipstack::sip::Headers) -> Result<MessageIds, String> {
    let mut counts = [0usize; 5]; // Via, From, To, Call-ID, CSeq
    let mut max_forwards = 0usize;
    let mut ids = MessageIds::default();
    let tag = |params: &str| {
        header_param(params, "tag")
            .filter(|t| !t.is_empty())
            .map(Tag::new)
    };
    for header in headers.iter() {
        match header {
            Header::Via(v) => {
                counts[0] += 1;
                let top = check_via(v.value())?;
                if counts[0] == 1 {
                    ids.branch = branch_in(top.params);
                    ids.sent_by = Some(top.sent_by.into());
                }
            }
            Header::From(v) => {
                counts[1] += 1;
                let parts = parse_name_addr(v.value()).map_err(|e| format!("From: {e}"))?;
                ids.from_tag = tag(parts.params);
            }
            Header::To(v) => {
                counts[2] += 1;
                let parts = parse_name_addr(v.value()).map_err(|e| format!("To: {e}"))?;
                ids.to_tag = tag(parts.params);
            }
            Header::CallId(v) => {
                counts[3] += 1;
                let value = v.value();
                if value.is_empty() || value.bytes().any(|b| matches!(b, b' ' | b'\t' | b',')) {
                    return Err(format!("Call-ID {value:?} malformed"));
                }
                ids.call_id = Some(CallId::new(value.trim_ascii()));
            }
            Header::CSeq(v) => {
                counts[4] += 1;
                ids.cseq = Some(
                    parse_cseq(v.value())
                        .ok_or_else(|| format!("CSeq {:?} malformed", v.value()))?,
                );
            }
            Header::MaxForwards(v) => {
                max_forwards += 1;
                let value = v.value();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("Max-Forwards {value:?} malformed"));
                }
            }
            Header::Contact(v) if v.value().trim() != "*" => {
                for contact in split_list(v.value()) {
                    parse_name_addr(contact).map_err(|e| format!("Contact: {e}"))?;
                }
            }
            Header::Route(_) | Header::RecordRoute(_) => {
                for route in split_list(header.value()) {
                    parse_name_addr(route).map_err(|e| format!("{}: {e}", header.name()))?;
                }
            }
            _ => {}
        }
    }
    let names = ["Via", "From", "To", "Call-ID", "CSeq"];
    for (name, count) in names.iter().zip(counts) {
        match count {
            0 => return Err(format!("{name} missing")),
            1 => {}
            _ if *name == "Via" => {}
            _ => return Err(format!("{name} appears {count} times")),
        }
    }
    if max_forwards > 1 {
        return Err("Max-Forwards appears more than once".into());
    }
    Ok(ids)
}

/// RFC 5118 §4.10: tolerate `[2001:db8:::192.0.2.1]` (the RFC 3261 ABNF bug) by
/// reading it as `[2001:db8::192.0.2.1]`.
fn tolerate_ipv6(message: &[u8], head_len: usize) -> Cow<'_, [u8]> {
    let head = &message[..head_len];
    static TRIPLE_COLON: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b":::"));
    if TRIPLE_COLON.find(head).is_none() {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len());
    let mut in_brackets = false;
    let mut i = 0;
    while i < head_len {
        let b = message[i];
        match b {
            b'[' => in_brackets = true,
            b']' => in_brackets = false,
            _ => {}
        }
        if in_brackets && head[i..].starts_with(b":::") {
            out.extend_from_slice(b"::");
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out.extend_from_slice(&message[head_len..]);
    Cow::Owned(out)
}

/// The headers of a request whose start line (or framing) is bad, read with a
/// stand-in start line so that a 400/501/505 can still be routed back to its sender.
fn lenient_head(message: &[u8]) -> Option<Request> {
    let start = message
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let message = &message[start..];
    let (head_len, _) = find_head_end(message)?;
    let line_end = first_line_len(message)?;
    if line_end >= head_len {
        return None;
    }
    let mut text = b"OPTIONS sip:invalid.invalid SIP/2.0".to_vec();
    text.extend_from_slice(&message[line_end..head_len]);
    // Drop Content-Length: the body is not carried over.
    let head = String::from_utf8_lossy(&text).into_owned();
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|l| {
            let name = l.split(':').next().unwrap_or("").trim();
            !(name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
        })
        .collect();
    let mut text = head.join("\r\n");
    text.push_str("\r\n\r\n");
    match SipMessage::try_from(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => Some(r),
        _ => None,
    }
}
