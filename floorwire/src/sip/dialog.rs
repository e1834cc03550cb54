//! Dialogs (RFC 3261 §12): identity, CSeq spaces, route set, remote target, and the
//! in-dialog requests built from them (BYE, re-INVITE, the ACK for a 2xx).

use rsipstack::sip::{
    Header, Headers, Method, Request, Response, Uri, Version,
    headers::untyped::{CSeq, CallId, ContentLength, From, MaxForwards, Route, To, Via},
};

use super::ids::{Branch, CallId as CallIdValue, MessageIds, Tag};
use super::syntax::{parse_name_addr, split_list};
use crate::error::Error;

/// §12: a dialog is identified by Call-ID, local tag and remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DialogId {
    pub call_id: CallIdValue,
    pub local_tag: Tag,
    pub remote_tag: Tag,
}

/// Early (after a 1xx with To tag) or confirmed (after 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// One side's view of a dialog (serialisable: an SBC pair replicates it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dialog {
    pub id: DialogId,
    pub state: DialogState,
    /// Our CSeq for the next request we send (§12.2.1.1).
    pub local_seq: u32,
    /// The highest CSeq seen from the peer (`None` until one arrives, §12.1.2).
    pub remote_seq: Option<u32>,
    /// Our From/To value (with our tag).
    pub local_party: String,
    /// The peer's From/To value (with its tag).
    pub remote_party: String,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Route set, in the order requests must carry it.
    pub route_set: Vec<String>,
    /// Our Contact, put in requests we send.
    pub local_contact: String,
}

fn header_value(headers: &Headers, pick: impl Fn(&Header) -> bool) -> Option<String> {
    headers
        .iter()
        .find(|h| pick(h))
        .map(|h| h.value().to_owned())
}

fn contact_uri(headers: &Headers) -> Option<String> {
    let value = header_value(headers, |h| matches!(h, Header::Contact(_)))?;
    let first = split_list(&value).next()?.to_owned();
    parse_name_addr(&first).ok().map(|n| n.uri.to_owned())
}

fn record_routes(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter(|h| matches!(h, Header::RecordRoute(_)))
        .flat_map(|h| split_list(h.value()).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Whether a route URI carries the `lr` parameter (loose routing, RFC 3261 §19.1.1):
/// parameters are what follows the host part, so a user part holding ";lr" or a
/// parameter like "lrx" does not count.
fn has_lr(uri: &str) -> bool {
    let uri = uri.split('?').next().unwrap_or(uri);
    let host_and_params = uri.rsplit_once('@').map_or(uri, |(_, h)| h);
    host_and_params.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("lr"))
    })
}

impl Dialog {
    /// The UAC's dialog from its INVITE and a 1xx/2xx response carrying a To tag
    /// (§12.1.2): route set is the Record-Route reversed.
    pub fn from_uac(request: &Request, response: &Response) -> Result<Self, Error> {
        let ids = MessageIds::of_dialog(response);
        let remote_tag = ids
            .to_tag
            .ok_or_else(|| Error::Dialog("response without To tag".into()))?;
        let local_tag = ids
            .from_tag
            .ok_or_else(|| Error::Dialog("request without From tag".into()))?;
        let call_id = ids
            .call_id
            .ok_or_else(|| Error::Dialog("no Call-ID".into()))?;
        let (local_seq, _) = MessageIds::of_dialog(request)
            .cseq
            .ok_or_else(|| Error::Dialog("no CSeq".into()))?;
        let mut route_set = record_routes(&response.headers);
        route_set.reverse();
        let code = response.status_code.code();
        Ok(Self {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            state: if (200..300).contains(&code) {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local_seq,
            remote_seq: None,
            local_party: header_value(&request.headers, |h| matches!(h, Header::From(_)))
                .unwrap_or_default(),
            remote_party: header_value(&response.headers, |h| matches!(h, Header::To(_)))
                .unwrap_or_default(),
            remote_target: contact_uri(&response.headers)
                .ok_or_else(|| Error::Dialog("response without Contact".into()))?,
            route_set,
            local_contact: contact_uri(&request.headers).unwrap_or_default(),
        })
    }

    /// The UAS's dialog from an INVITE it answers with `local_tag` and `local_contact`
    /// (§12.1.1): route set is the Record-Route in order.
    pub fn from_uas(request: &Request, local_tag: Tag, local_contact: &str) -> Result<Self, Error> {
        let ids = MessageIds::of_dialog(request);
        let remote_tag = ids
            .from_tag
            .ok_or_else(|| Error::Dialog("request without From tag".into()))?;
        let call_id = ids
            .call_id
            .ok_or_else(|| Error::Dialog("no Call-ID".into()))?;
        let (remote_seq, _) = ids.cseq.ok_or_else(|| Error::Dialog("no CSeq".into()))?;
        let to = header_value(&request.headers, |h| matches!(h, Header::To(_))).unwrap_or_default();
        Ok(Self {
            local_party: format!("{to};tag={}", local_tag.as_str()),
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            state: DialogState::Confirmed,
            local_seq: rand::random::<u16>() as u32 + 1,
            remote_seq: Some(remote_seq),
            remote_party: header_value(&request.headers, |h| matches!(h, Header::From(_)))
                .unwrap_or_default(),
            remote_target: contact_uri(&request.headers)
                .ok_or_else(|| Error::Dialog("request without Contact".into()))?,
            route_set: record_routes(&request.headers),
            local_contact: local_contact.to_owned(),
        })
    }

    /// Applies a 2xx to an early UAC dialog (§12.1.2, §13.2.2.4): confirmed, with the
    /// 2xx's Contact and Record-Route.
    pub fn confirm(&mut self, response: &Response) {
        self.state = DialogState::Confirmed;
        if let Some(target) = contact_uri(&response.headers) {
            self.remote_target = target;
        }
        let mut route_set = record_routes(&response.headers);
        route_set.reverse();
        self.route_set = route_set;
    }

    /// Checks an in-dialog request from the peer (§12.2.2): a CSeq lower than the last
    /// one is refused with 500; a target refresh (re-INVITE, UPDATE) updates the remote
    /// target.
    pub fn receive_request(&mut self, request: &Request) -> Result<(), u16> {
        let (seq, _) = MessageIds::of_dialog(request).cseq.ok_or(400u16)?;
        if request.method != Method::Ack {
            if let Some(last) = self.remote_seq
                && seq <= last
            {
                return Err(500);
            }
            self.remote_seq = Some(seq);
        }
        if matches!(request.method, Method::Invite | Method::Update)
            && let Some(target) = contact_uri(&request.headers)
        {
            self.remote_target = target;
        }
        if request.method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }

    /// A new in-dialog request (§12.2.1.1), with the next local CSeq (or, for ACK and
    /// CANCEL, `cseq_override`). `via_sent_by` is our transport address.
    pub fn request(
        &mut self,
        method: Method,
        via_sent_by: &str,
        cseq_override: Option<u32>,
    ) -> Result<Request, Error> {
        let seq = match cseq_override {
            Some(seq) => seq,
            None => {
                self.local_seq = self.local_seq.wrapping_add(1);
                self.local_seq
            }
        };
        let (uri, routes) = self.target()?;
        let mut headers = crate::sip::framing::headers_with_room();
        headers.push(Header::Via(Via::new(format!(
            "SIP/2.0/UDP {via_sent_by};branch={};rport",
            Branch::generate()
        ))));
        headers.push(Header::MaxForwards(MaxForwards::new("70")));
        for route in routes.iter() {
            headers.push(Header::Route(Route::new(route.as_str())));
        }
        headers.push(Header::From(From::new(self.local_party.clone())));
        headers.push(Header::To(To::new(self.remote_party.clone())));
        headers.push(Header::CallId(CallId::new(self.id.call_id.as_str())));
        headers.push(Header::CSeq(CSeq::new(format!("{seq} {method}"))));
        if !self.local_contact.is_empty() && method != Method::Ack {
            headers.push(Header::Contact(format!("<{}>", self.local_contact).into()));
        }
        headers.push(Header::ContentLength(ContentLength::new("0")));
        Ok(Request {
            method,
            uri,
            version: Version::V2,
            headers,
            body: Vec::new(),
        })
    }

    /// The Request-URI and the Route values of a request in the dialog. Loose
    /// routing: the remote target, and the route set. Strict routing (first route
    /// without ;lr): the first route, and the rest with the target appended last.
    fn target(&self) -> Result<(Uri, std::borrow::Cow<'_, [String]>), Error> {
        let strict = self
            .route_set
            .first()
            .is_some_and(|r| parse_name_addr(r).is_ok_and(|n| !has_lr(n.uri)));
        let (uri_text, routes): (&str, std::borrow::Cow<'_, [String]>) = if strict {
            let first = parse_name_addr(&self.route_set[0]).map_or("", |n| n.uri);
            let mut rest = self.route_set[1..].to_vec();
            rest.push(format!("<{}>", self.remote_target));
            (first, rest.into())
        } else {
            (&self.remote_target, self.route_set.as_slice().into())
        };
        let uri = Uri::try_from(uri_text)
            .map_err(|e| Error::Dialog(format!("remote target {uri_text:?}: {e}")))?;
        Ok((uri, routes))
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4): a new
    /// transaction-less request with the INVITE's CSeq number.
    pub fn ack(&mut self, invite_seq: u32, via_sent_by: &str) -> Result<Request, Error> {
        self.request(Method::Ack, via_sent_by, Some(invite_seq))
    }

    /// [`Self::ack`] written straight to its bytes for the wire, as `to_wire` writes
    /// it. An ACK goes out once, stateless, and is kept only as bytes (to answer a
    /// retransmitted 2xx): building its headers one heap block each was for nothing.
    pub fn ack_wire(&self, invite_seq: u32, via_sent_by: &str) -> Result<Vec<u8>, Error> {
        self.write_request(Method::Ack, invite_seq, via_sent_by, &Branch::generate())
    }

    /// [`Self::request`] written straight to its bytes for the wire, with the branch
    /// of its Via: what a transaction for a request other than INVITE takes
    /// ([`TransactionLayer::send_request_wire`](crate::sip::transaction::TransactionLayer::send_request_wire)).
    pub fn request_wire(
        &mut self,
        method: Method,
        via_sent_by: &str,
    ) -> Result<(Vec<u8>, Branch), Error> {
        self.local_seq = self.local_seq.wrapping_add(1);
        let branch = Branch::generate();
        let bytes = self.write_request(method, self.local_seq, via_sent_by, &branch)?;
        Ok((bytes, branch))
    }

    /// The bytes of the request [`Self::request`] builds, with `seq` and `branch`.
    fn write_request(
        &self,
        method: Method,
        seq: u32,
        via_sent_by: &str,
        branch: &Branch,
    ) -> Result<Vec<u8>, Error> {
        use std::io::Write as _;
        let (uri, routes) = self.target()?;
        let size = 256
            + routes.iter().map(|r| r.len() + 9).sum::<usize>()
            + self.local_party.len()
            + self.remote_party.len()
            + self.id.call_id.as_str().len()
            + self.local_contact.len()
            + self.remote_target.len();
        let mut out = Vec::with_capacity(size);
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "{method} {uri} {}\r\nVia: SIP/2.0/UDP {via_sent_by};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            Version::V2,
        );
        for route in routes.iter() {
            let _ = write!(out, "Route: {route}\r\n");
        }
        let _ = write!(
            out,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\n",
            self.local_party,
            self.remote_party,
            self.id.call_id.as_str()
        );
        if !self.local_contact.is_empty() && method != Method::Ack {
            let _ = write!(out, "Contact: <{}>\r\n", self.local_contact);
        }
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::framing::ToWire;
    use crate::sip::ingress::{Inbound, parse_datagram};

    fn req(text: &str) -> Request {
        match parse_datagram(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Inbound::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }
    fn resp(text: &str) -> Response {
        match parse_datagram(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Inbound::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0
Via: SIP/2.0/UDP a.example;branch=z9hG4bK1
From: <sip:alice@a.example>;tag=a1
To: <sip:bob@b.example>
Call-ID: c1@a
CSeq: 10 INVITE
Contact: <sip:alice@10.0.0.1>
Content-Length: 0

";

    #[test]
    fn uac_dialog_routes_and_cseq() {
        let invite = req(INVITE);
        let ok = resp(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP a.example;branch=z9hG4bK1
Record-Route: <sip:p2.example;lr>, <sip:p1.example;lr>
From: <sip:alice@a.example>;tag=a1
To: <sip:bob@b.example>;tag=b1
Call-ID: c1@a
CSeq: 10 INVITE
Contact: <sip:bob@10.0.0.2>
Content-Length: 0

",
        );
        let mut d = Dialog::from_uac(&invite, &ok).expect("dialog");
        assert_eq!(d.id.remote_tag.as_str(), "b1");
        assert_eq!(d.state, DialogState::Confirmed);
        // The ACK written straight to bytes is the one built and serialised (but for
        // the Via branch, fresh each time).
        let branchless = |bytes: Vec<u8>| {
            let text = String::from_utf8(bytes).expect("UTF-8");
            let at = text.find("branch=").expect("branch") + "branch=".len();
            let end = at + text[at..].find(';').expect("rport");
            format!("{}{}", &text[..at], &text[end..])
        };
        assert_eq!(
            branchless(d.ack_wire(10, "10.0.0.1:5060").expect("ack")),
            branchless(d.ack(10, "10.0.0.1:5060").expect("ack").to_wire())
        );
        let mut twin = d.clone();
        let (bye, branch) = twin
            .request_wire(Method::Bye, "10.0.0.1:5060")
            .expect("bye");
        assert!(branch.is_rfc3261());
        assert_eq!(
            branchless(bye),
            branchless(
                d.clone()
                    .request(Method::Bye, "10.0.0.1:5060", None)
                    .expect("bye")
                    .to_wire()
            )
        );
        let ack = d.ack(10, "10.0.0.1:5060").expect("ack");
        assert_eq!(MessageIds::of(&ack).cseq, Some((10, "ACK".into())));
        let bye = d.request(Method::Bye, "10.0.0.1:5060", None).expect("bye");
        assert_eq!(bye.uri.to_string(), "sip:bob@10.0.0.2");
        assert_eq!(MessageIds::of(&bye).cseq, Some((11, "BYE".into())));
        let routes: Vec<_> = bye
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Route(_)))
            .map(|h| h.value().to_owned())
            .collect();
        assert_eq!(routes, vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
    }

    #[test]
    fn lr_is_a_parameter_not_a_substring() {
        assert!(has_lr("sip:p1.example;lr"));
        assert!(has_lr("sip:p1.example;transport=udp;LR=on"));
        assert!(!has_lr("sip:p1.example;lrx"));
        assert!(!has_lr("sip:us;lr@p1.example"));
    }

    #[test]
    fn strict_route_puts_target_last() {
        let invite = req(INVITE);
        let ok = resp(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP a.example;branch=z9hG4bK1
Record-Route: <sip:strict.example>
From: <sip:alice@a.example>;tag=a1
To: <sip:bob@b.example>;tag=b1
Call-ID: c1@a
CSeq: 10 INVITE
Contact: <sip:bob@10.0.0.2>
Content-Length: 0

",
        );
        let mut d = Dialog::from_uac(&invite, &ok).expect("dialog");
        let bye = d.request(Method::Bye, "h", None).expect("bye");
        assert_eq!(bye.uri.to_string(), "sip:strict.example");
        let route = bye
            .headers
            .iter()
            .find(|h| matches!(h, Header::Route(_)))
            .map(|h| h.value().to_owned());
        assert_eq!(route.as_deref(), Some("<sip:bob@10.0.0.2>"));
    }

    #[test]
    fn uas_refuses_old_cseq_and_refreshes_target() {
        let invite = req(INVITE);
        let mut d = Dialog::from_uas(&invite, Tag::new("b1"), "sip:bob@10.0.0.2").expect("dialog");
        let reinvite = req(&INVITE
            .replace("CSeq: 10", "CSeq: 11")
            .replace("To: <sip:bob@b.example>", "To: <sip:bob@b.example>;tag=b1")
            .replace("10.0.0.1", "10.0.0.9"));
        assert_eq!(d.receive_request(&reinvite), Ok(()));
        assert_eq!(d.remote_target, "sip:alice@10.0.0.9");
        // Lower than the last CSeq: out of order (§12.2.2).
        let old = req(&INVITE.replace("To: <sip:bob@b.example>", "To: <sip:bob@b.example>;tag=b1"));
        assert_eq!(d.receive_request(&old), Err(500));
    }
}
