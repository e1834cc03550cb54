//! What a UAS owns in request processing (RFC 3261 §8.2) and a proxy in §16.3:
//! method (405/501), URI scheme (416), extensions (420), content (415, 406), and
//! Max-Forwards (483). These run after [`super::ingress`] has accepted the message.

use rsipstack::sip::{HasHeaders, Header, Method, Request, Response, headers::untyped::Allow};

use super::ids::Tag;
use super::ingress::ALLOWED_METHODS;
use super::reply::{response_to, with_header};
use super::syntax::{parse_name_addr, split_list};

/// What this endpoint accepts; the defaults suit a voice UAS.
#[derive(Debug, Clone)]
pub struct UasPolicy {
    /// Methods the endpoint handles; other known methods get 405.
    pub methods: Vec<Method>,
    /// Option tags understood in Require (RFC 3261 §8.2.2.3).
    pub extensions: Vec<String>,
    /// Body types understood (§8.2.3).
    pub content_types: Vec<String>,
    /// URI schemes served in the Request-URI (§8.2.2.1).
    pub schemes: Vec<String>,
    /// Whether To must hold a SIP/SIPS URI (a registrar's rule: RFC 4475 `unksm2`).
    pub registrar: bool,
}

impl Default for UasPolicy {
    fn default() -> Self {
        Self {
            methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Info,
                Method::Update,
            ],
            extensions: vec!["replaces".into(), "timer".into()],
            content_types: vec!["application/sdp".into()],
            schemes: vec!["sip".into(), "sips".into(), "tel".into()],
            registrar: false,
        }
    }
}

/// A request refused with a status and the headers that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Refusal {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The response carrying this refusal.
    pub fn response(&self, request: &Request, to_tag: &Tag) -> Response {
        let mut response = response_to(request, self.status, Some(to_tag));
        for (name, value) in &self.headers {
            let header = if name == "Allow" {
                Header::Allow(Allow::new(value.clone()))
            } else {
                Header::Other(name.clone(), value.clone())
            };
            response = with_header(response, header);
        }
        response
    }
}

/// Runs the §8.2 checks in the RFC's order.
pub fn check_request(request: &Request, policy: &UasPolicy) -> Result<(), Refusal> {
    // §8.2.1 method inspection. Unknown methods never get here (ingress answers 501).
    if !policy.methods.contains(&request.method) {
        return Err(Refusal::new(405).with("Allow", ALLOWED_METHODS));
    }
    // §8.2.2.1 To and Request-URI.
    let scheme = request
        .uri
        .scheme
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if !policy
        .schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&scheme))
    {
        return Err(Refusal::new(416));
    }
    if policy.registrar {
        let to_is_sip = request.headers.iter().any(|h| match h {
            Header::To(to) => parse_name_addr(to.value()).is_ok_and(|n| {
                let lower = n.uri.to_ascii_lowercase();
                lower.starts_with("sip:") || lower.starts_with("sips:")
            }),
            _ => false,
        });
        if !to_is_sip {
            return Err(
                Refusal::new(400).with("Warning", "399 floorwire \"To must be a SIP or SIPS AOR\"")
            );
        }
    }
    // §8.2.2.3 Require (ignored for CANCEL and ACK).
    if !matches!(request.method, Method::Ack | Method::Cancel) {
        let unsupported = option_tags(request, "Require")
            .into_iter()
            .filter(|tag| {
                !policy
                    .extensions
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(tag))
            })
            .collect::<Vec<_>>();
        if !unsupported.is_empty() {
            return Err(Refusal::new(420).with("Unsupported", unsupported.join(", ")));
        }
    }
    // §8.2.3 content processing.
    if !request.body.is_empty() {
        let content_type = header_text(request, "Content-Type").unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !policy
            .content_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(media))
        {
            return Err(Refusal::new(415).with("Accept", policy.content_types.join(", ")));
        }
    }
    // §21.4.7: the answer we would send (SDP) is not acceptable to the caller.
    if request.method == Method::Invite
        && let Some(accept) = header_text(request, "Accept")
    {
        let acceptable = split_list(&accept).into_iter().any(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case("application/sdp")
                || t == "*/*"
                || t.eq_ignore_ascii_case("application/*")
        });
        if !acceptable {
            return Err(Refusal::new(406).with(
                "Warning",
                "399 floorwire \"only application/sdp answers are available\"",
            ));
        }
    }
    Ok(())
}

/// Proxy checks (§16.3): Max-Forwards (483 when zero; OPTIONS may be answered by the
/// proxy itself instead) and Proxy-Require (420). Returns the decremented
/// Max-Forwards to forward with (70 when absent).
pub fn check_proxy_request(request: &Request, extensions: &[String]) -> Result<u32, Refusal> {
    let unsupported = option_tags(request, "Proxy-Require")
        .into_iter()
        .filter(|tag| !extensions.iter().any(|e| e.eq_ignore_ascii_case(tag)))
        .collect::<Vec<_>>();
    if !unsupported.is_empty() {
        return Err(Refusal::new(420).with("Unsupported", unsupported.join(", ")));
    }
    let max_forwards = request.headers.iter().find_map(|h| match h {
        Header::MaxForwards(m) => Some(m.value().trim().parse::<u64>().unwrap_or(70)),
        _ => None,
    });
    match max_forwards {
        Some(0) => Err(Refusal::new(483)),
        // RFC 4475 scalar02: an overlarge value may be treated as absent.
        Some(n) if n > 255 => Ok(69),
        Some(n) => Ok(n as u32 - 1),
        None => Ok(70),
    }
}

/// The comma-separated option tags of every `name` header.
fn option_tags(request: &Request, name: &str) -> Vec<String> {
    request
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .flat_map(|h| {
            h.value()
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The first header called `name` (long form), as text.
pub fn header_text(message: &impl HasHeaders, name: &str) -> Option<String> {
    message
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_owned())
}
