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
                if status > 100
                    && tag_of(&value).is_none()
                    && let Some(tag) = to_tag
                {
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

/// What of `request` a response to it copies (§8.2.6.2): method, Request-URI and
/// version, and its Via, From, To, Call-ID and CSeq headers; no body. A server
/// transaction keeps this much to answer later, not the whole request.
pub fn response_head(request: &Request) -> Request {
    let mut headers = crate::sip::framing::headers_with_room();
    for header in request.headers.iter() {
        if matches!(
            header,
            Header::Via(_) | Header::From(_) | Header::To(_) | Header::CallId(_) | Header::CSeq(_)
        ) {
            headers.push(header.clone());
        }
    }
    Request {
        method: request.method,
        uri: request.uri.clone(),
        version: request.version,
        headers,
        body: Vec::new(),
    }
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
