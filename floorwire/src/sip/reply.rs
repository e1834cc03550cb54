//! Building responses to requests (RFC 3261 §8.2.6).

use rsipstack::sip::{
    Header, Headers, Request, Response, StatusCode, Version,
    headers::untyped::{ContentLength, To},
};

use super::ids::{Tag, tag_of};

/// A response to `request` with `status`: Via, From, Call-ID, CSeq and To copied
/// (§8.2.6.2), a To tag added for anything but 100 when the request had none, and
/// `Content-Length: 0`. The reason phrase is the standard one unless `reason` is given.
pub fn response_to(request: &Request, status: u16, to_tag: Option<&Tag>) -> Response {
    let mut headers = crate::sip::framing::headers_with_room();
    for header in request.headers.iter() {
        match header {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(header.clone());
            }
            Header::To(to) => {
                let mut value = to.value().to_owned();
                if let Some(tag) = tag_to_add(status, &value, to_tag) {
                    value.push_str(";tag=");
                    value.push_str(tag.as_str());
                }
                headers.push(Header::To(To::new(value)));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(ContentLength::new("0")));
    Response {
        status_code: StatusCode::from(status),
        wire_reason: None,
        version: Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The tag a response with `status` adds to its request's To, `to`: `tag`, for any
/// status but 100, when `to` has none (§8.2.6.2).
pub fn tag_to_add<'t>(status: u16, to: &str, tag: Option<&'t Tag>) -> Option<&'t Tag> {
    tag.filter(|_| status > 100 && tag_of(to).is_none())
}

/// The To tag that response carries: the request's own, else the one added.
pub fn carried_tag(status: u16, to: &str, tag: Option<&Tag>) -> Option<Tag> {
    tag_of(to).or_else(|| tag_to_add(status, to, tag).cloned())
}

/// What [`response_to`] gives for `request`, `status` and `to_tag`, with `extra`
/// headers added as [`with_header`] adds them and `body` set as [`with_body`] sets
/// it (content type, bytes), written straight to its bytes for the wire. Building a
/// `Response` to serialise it at once took a heap block for each header copied; the
/// B2BUA answers every INVITE, re-INVITE and BYE it relays this way.
pub fn response_wire(
    request: &Request,
    status: u16,
    to_tag: Option<&Tag>,
    extra: &[&Header],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let copied = || {
        request
            .headers
            .iter()
            .filter(|h| is_copied(h))
            .map(|h| (h.name(), h.value()))
    };
    write_response(copied, status, to_tag, extra, body)
}

/// The headers a response copies from its request (§8.2.6.2).
fn is_copied(header: &Header) -> bool {
    matches!(
        header,
        Header::Via(_) | Header::From(_) | Header::To(_) | Header::CallId(_) | Header::CSeq(_)
    )
}

/// What a server transaction keeps of its request to answer it later: the headers a
/// response copies (Via, From, To, Call-ID, CSeq), names and values, in one block
/// (each as its name's length, one byte, the name, its value's length, four bytes,
/// little-endian, the value). A `Request` of copied headers was a heap block a
/// header for every INVITE and BYE received; this is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead(Box<[u8]>);

impl ResponseHead {
    /// The head of `request`.
    pub fn of(request: &Request) -> Self {
        let copied = || request.headers.iter().filter(|h| is_copied(h));
        let size = copied()
            .map(|h| 5 + h.name().len() + h.value().len())
            .sum::<usize>();
        let mut block = Vec::with_capacity(size);
        for header in copied() {
            let (name, value) = (header.name(), header.value());
            // Header names are short tokens; values fit in a datagram.
            block.push(name.len().min(u8::MAX as usize) as u8);
            block.extend_from_slice(&name.as_bytes()[..name.len().min(u8::MAX as usize)]);
            block.extend_from_slice(&(value.len() as u32).to_le_bytes());
            block.extend_from_slice(value.as_bytes());
        }
        Self(block.into_boxed_slice())
    }

    /// The (name, value) of each header kept, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (&name_len, after) = rest.split_first()?;
            let (name, after) = after.split_at_checked(name_len as usize)?;
            let (len, after) = after.split_first_chunk::<4>()?;
            let (value, after) = after.split_at_checked(u32::from_le_bytes(*len) as usize)?;
            rest = after;
            // Written from `str`s above: always UTF-8.
            Some((
                std::str::from_utf8(name).unwrap_or_default(),
                std::str::from_utf8(value).unwrap_or_default(),
            ))
        })
    }

    /// The value of the first header called `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// What [`response_wire`] gives for the request this is the head of.
    pub fn response_wire(
        &self,
        status: u16,
        to_tag: Option<&Tag>,
        extra: &[&Header],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        write_response(|| self.headers(), status, to_tag, extra, body)
    }
}

/// A response with `status` to a request whose copied headers `copied` gives (read
/// twice: to size the buffer, then to write).
fn write_response<'a, I: Iterator<Item = (&'a str, &'a str)>>(
    copied: impl Fn() -> I,
    status: u16,
    to_tag: Option<&Tag>,
    extra: &[&Header],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    use std::io::Write as _;
    let code = StatusCode::from(status);
    // Start line, a To tag, Content-Type and -Length lines: within this much.
    const ROOM: usize = 160;
    let size = ROOM
        + copied().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
        + extra
            .iter()
            .map(|h| h.name().len() + h.value().len() + 4)
            .sum::<usize>()
        + body.map_or(0, |(kind, bytes)| kind.len() + bytes.len());
    let mut out = Vec::with_capacity(size);
    let line = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{} {} {}\r\n", Version::V2, code.code(), code.text());
    for (name, value) in copied() {
        line(&mut out, name, value);
        if name == "To"
            && let Some(tag) = tag_to_add(status, value, to_tag)
        {
            // The tag goes on the To line just written, before its CRLF.
            out.truncate(out.len() - 2);
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    for header in extra {
        line(&mut out, header.name(), header.value());
    }
    match body {
        Some((kind, bytes)) => {
            line(&mut out, "Content-Type", kind);
            let _ = write!(out, "Content-Length: {}\r\n\r\n", bytes.len());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    out
}

/// Adds a header to a response, before Content-Length.
pub fn with_header(mut response: Response, header: Header) -> Response {
    let all = &mut response.headers.0;
    let at = all
        .iter()
        .position(|h| matches!(h, Header::ContentLength(_)))
        .unwrap_or(all.len());
    all.insert(at, header);
    response
}

/// Replaces a response's body, setting Content-Type and Content-Length.
pub fn with_body(mut response: Response, content_type: &str, body: Vec<u8>) -> Response {
    set_body_headers(&mut response.headers, content_type, body.len());
    response.body = body;
    response
}

/// Replaces a request's body, setting Content-Type and Content-Length.
pub fn request_with_body(mut request: Request, content_type: &str, body: Vec<u8>) -> Request {
    set_body_headers(&mut request.headers, content_type, body.len());
    request.body = body;
    request
}

fn set_body_headers(headers: &mut Headers, content_type: &str, len: usize) {
    headers.retain(|h| !matches!(h, Header::ContentLength(_) | Header::ContentType(_)));
    headers.push(Header::ContentType(content_type.to_owned().into()));
    headers.push(Header::ContentLength(ContentLength::new(len.to_string())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::framing::ToWire;
    use crate::sip::ingress::{Inbound, parse_datagram};
    use rsipstack::sip::headers::untyped::RecordRoute;

    fn invite(to: &str) -> Request {
        let text = format!(
            "INVITE sip:7101@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=f1\r\nTo: {to}\r\n\
Call-ID: c1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:5061>\r\n\
Record-Route: <sip:p1;lr>\r\nContent-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.as_bytes()) {
            Ok(Inbound::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// The head keeps the copied headers, names and values, in order (two Vias),
    /// and nothing else.
    #[test]
    fn a_response_head_keeps_the_copied_headers_in_order() {
        let head = ResponseHead::of(&invite("<sip:7101@127.0.0.1>"));
        let kept: Vec<_> = head.headers().collect();
        assert_eq!(
            kept,
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1"),
                ("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0"),
                ("From", "<sip:a@127.0.0.1>;tag=f1"),
                ("To", "<sip:7101@127.0.0.1>"),
                ("Call-ID", "c1@127.0.0.1"),
                ("CSeq", "1 INVITE"),
            ]
        );
        assert_eq!(head.value("CSeq"), Some("1 INVITE"));
        assert_eq!(head.value("Contact"), None);
    }

    /// The bytes are those of the `Response` built and serialised, for a 100 (no
    /// tag), provisional and final responses (tag added, or kept when To has one),
    /// with and without extra headers and a body.
    #[test]
    fn response_wire_writes_what_the_built_response_serialises_to() {
        let tag = Tag::new("t9");
        let contact = Header::Contact("<sip:tpo@127.0.0.1:5060>".to_owned().into());
        let route = Header::RecordRoute(RecordRoute::new("<sip:p1;lr>"));
        let sdp = b"v=0\r\n".as_slice();
        for to in ["<sip:7101@127.0.0.1>", "<sip:7101@127.0.0.1>;tag=x"] {
            let request = invite(to);
            for status in [100, 180, 200, 487, 503] {
                for (extra, body) in [
                    (vec![], None),
                    (vec![&route, &contact], None),
                    (vec![&contact], Some(("application/sdp", sdp))),
                ] {
                    let mut built = response_to(&request, status, Some(&tag));
                    for header in &extra {
                        built = with_header(built, (*header).clone());
                    }
                    if let Some((kind, bytes)) = body {
                        built = with_body(built, kind, bytes.to_vec());
                    }
                    let written = response_wire(&request, status, Some(&tag), &extra, body);
                    assert_eq!(
                        String::from_utf8_lossy(&written),
                        String::from_utf8_lossy(&built.to_wire()),
                        "{status} to {to}"
                    );
                    let head = ResponseHead::of(&request);
                    assert_eq!(
                        head.response_wire(status, Some(&tag), &extra, body),
                        written,
                        "{status} to {to}, from the head"
                    );
                }
            }
        }
    }
}
