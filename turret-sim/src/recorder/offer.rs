//! What a SIPREC recording session's INVITE carries (RFC 7866): the multipart body's
//! SDP offer and RFC 7865 metadata, read into plain values; and the recorder's SDP
//! answer. No I/O.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use floorwire::sdp::{self, Codec, Session};
use quick_xml::events::Event;
use serde::Serialize;

use crate::Error;

/// A recorded party, from the metadata's `participant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Party {
    /// Its address-of-record (`sip:7101@127.0.1.21`).
    pub aor: String,
    /// The user part of the AOR: the number.
    pub number: String,
    /// A display name, if the metadata gives one.
    pub name: Option<String>,
}

/// The RFC 7865 metadata of a recording session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The metadata's `session_id`.
    pub session_id: String,
    /// The recorded call's Call-ID (`sipSessionID`).
    pub call_id: String,
    /// When the recorded call started (`start-time`).
    pub start_time: String,
    /// The parties, in the metadata's order (the caller first).
    pub participants: Vec<Party>,
    /// Extension data (`fw:user`, `fw:line`, `fw:direction`, `fw:tpo`…), by local name.
    pub facts: BTreeMap<String, String>,
}

/// An offered stream: its label and the G.711 payload to record it with (`None`: no
/// G.711 offered, the stream is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedStream {
    pub label: String,
    pub payload: Option<(u8, Codec)>,
}

/// A SIPREC offer: its audio streams and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiprecOffer {
    pub streams: Vec<OfferedStream>,
    pub metadata: Metadata,
}

/// The metadata part's type (RFC 7865).
pub const METADATA_TYPE: &str = floorwire::sip::siprec::METADATA_TYPE;

fn bad(what: impl Into<String>) -> Error {
    Error::Siprec(what.into())
}

/// Reads an INVITE body of type `content_type`: `multipart/mixed` with an SDP part and
/// an `application/rs-metadata+xml` part.
pub fn parse_offer(content_type: &str, body: &[u8]) -> Result<SiprecOffer, Error> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/mixed")
    {
        return Err(bad(format!(
            "Content-Type {content_type}: a recording session needs multipart/mixed (SDP + metadata)"
        )));
    }
    // mailparse reads MIME entities: give it the body under its Content-Type header.
    let mut entity = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    entity.extend_from_slice(body);
    let mail = mailparse::parse_mail(&entity).map_err(|e| bad(format!("multipart body: {e}")))?;
    let mut sdp_part = None;
    let mut metadata_part = None;
    for part in &mail.subparts {
        let mime = part.ctype.mimetype.to_ascii_lowercase();
        let raw = part
            .get_body_raw()
            .map_err(|e| bad(format!("multipart part {mime}: {e}")))?;
        match mime.as_str() {
            "application/sdp" => sdp_part = Some(raw),
            m if m == METADATA_TYPE => metadata_part = Some(raw),
            _ => {}
        }
    }
    let sdp_part = sdp_part.ok_or_else(|| bad("no application/sdp part"))?;
    let metadata_part = metadata_part.ok_or_else(|| bad("no application/rs-metadata+xml part"))?;
    let session = sdp::parse(&sdp_part)?;
    let metadata = parse_metadata(&String::from_utf8_lossy(&metadata_part))?;
    Ok(SiprecOffer {
        streams: streams(&session),
        metadata,
    })
}

/// The offer's audio streams, labelled (`a=label`, else their position from 1).
fn streams(session: &Session) -> Vec<OfferedStream> {
    session
        .medias
        .iter()
        .filter(|m| m.media == "audio")
        .enumerate()
        .map(|(i, m)| {
            let label = m
                .attributes
                .iter()
                .find(|a| a.attribute == "label")
                .and_then(|a| a.value.clone())
                .unwrap_or_else(|| (i + 1).to_string());
            let payload = sdp::payloads(m)
                .into_iter()
                .find(|p| matches!(p.codec, Codec::Pcma | Codec::Pcmu))
                .map(|p| (p.payload_type, p.codec));
            OfferedStream { label, payload }
        })
        .collect()
}

/// The user part of a SIP URI (`sip:7101@host` → `7101`).
fn uri_user(aor: &str) -> String {
    let rest = aor
        .trim()
        .trim_start_matches('<')
        .split_once(':')
        .map_or(aor, |(_, r)| r);
    rest.split(['@', ';', '>']).next().unwrap_or("").to_owned()
}

/// Reads RFC 7865 metadata: the session, the participants and Floorwire's extension
/// data. Elements it does not know are skipped.
pub fn parse_metadata(xml: &str) -> Result<Metadata, Error> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut metadata = Metadata::default();
    // Local names of the open elements.
    let mut open: Vec<String> = Vec::new();
    // Text of the innermost element, as it comes.
    let mut text = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("metadata XML: {e}")))?;
        match event {
            Event::Start(e) => {
                let name = on_element(&e, &open, &mut metadata);
                open.push(name);
                text.clear();
            }
            Event::Empty(e) => {
                on_element(&e, &open, &mut metadata);
            }
            Event::Text(t) => {
                text.push_str(&t.decode().map_err(|e| bad(format!("metadata XML: {e}")))?);
            }
            // quick-xml hands entity references (`&amp;`, `&#38;`) over on their own.
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| bad(format!("metadata XML: {e}")))?;
                match r.resolve_char_ref() {
                    Ok(Some(c)) => text.push(c),
                    _ => match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(c) => text.push_str(c),
                        None => return Err(bad(format!("metadata XML: unknown entity &{name};"))),
                    },
                }
            }
            Event::End(_) => {
                let value = std::mem::take(&mut text).trim().to_owned();
                let parent = open.get(open.len().saturating_sub(2)).map(String::as_str);
                match (parent, open.last().map(String::as_str)) {
                    (Some("session"), Some("sipSessionID")) => metadata.call_id = value,
                    (Some("session"), Some("start-time")) => metadata.start_time = value,
                    (Some("nameID"), Some("name")) => {
                        if let Some(p) = metadata.participants.last_mut() {
                            p.name = Some(value);
                        }
                    }
                    (Some("call"), Some(fact)) => {
                        metadata.facts.insert(fact.to_owned(), value);
                    }
                    _ => {}
                }
                open.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if metadata.session_id.is_empty() {
        return Err(bad("metadata names no recording session (session_id)"));
    }
    Ok(metadata)
}

/// Reads an element's attributes into `metadata`; returns its local name.
fn on_element(
    e: &quick_xml::events::BytesStart<'_>,
    open: &[String],
    metadata: &mut Metadata,
) -> String {
    let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    let attribute = |wanted: &str| {
        e.attributes().flatten().find_map(|a| {
            (a.key.local_name().as_ref() == wanted.as_bytes())
                .then(|| a.unescape_value().ok().map(|v| v.into_owned()))
                .flatten()
        })
    };
    match name.as_str() {
        "session" if open.last().is_some_and(|p| p == "recording") => {
            metadata.session_id = attribute("session_id").unwrap_or_default();
        }
        "nameID" => {
            let aor = attribute("aor").unwrap_or_default();
            metadata.participants.push(Party {
                number: uri_user(&aor),
                aor,
                name: None,
            });
        }
        _ => {}
    }
    name
}

/// The recorder's SDP answer: each offered stream received (`recvonly`) on its port
/// in `ports` (same order), with the offered G.711 payload; a stream without G.711
/// is refused with port 0.
pub fn answer_sdp(
    ip: IpAddr,
    streams: &[OfferedStream],
    ports: &[u16],
    session_id: u64,
) -> Vec<u8> {
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let mut text = format!(
        "v=0\r\no=floorwire-srs {session_id} 1 IN {family} {ip}\r\ns=Floorwire recorder\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (stream, port) in streams.iter().zip(ports) {
        match stream.payload {
            Some((pt, codec)) => text.push_str(&format!(
                "m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/8000\r\na=label:{}\r\na=recvonly\r\n",
                codec.name(),
                stream.label
            )),
            None => text.push_str(&format!(
                "m=audio 0 RTP/AVP 0\r\na=label:{}\r\na=inactive\r\n",
                stream.label
            )),
        }
    }
    text.into_bytes()
}

/// The address a stream of `answer` was asked for, for tests and logs.
pub fn stream_address(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floorwire::sip::siprec::{
        Participant, RecordingIds, RecordingMetadata, invite_body, metadata_xml, offer_sdp,
    };

    fn floorwire_offer() -> (String, Vec<u8>, RecordingIds) {
        let metadata = RecordingMetadata {
            call_id: "call-1@127.0.10.1".into(),
            caller: Participant {
                aor: "sip:7101@127.0.1.21".into(),
                name: Some("trader01 <&> desk".into()),
            },
            callee: Participant {
                aor: "sip:7111@127.0.1.21".into(),
                name: None,
            },
            start_time: "2026-12-01T09:00:00.000Z".into(),
            extension: vec![
                ("user".into(), "trader01".into()),
                ("line".into(), "EXT-01".into()),
                ("direction".into(), "internal".into()),
            ],
        };
        let ids = RecordingIds::generate();
        let xml = metadata_xml(&metadata, &ids);
        let sdp = offer_sdp(
            "127.0.1.21:11002".parse().expect("a"),
            "127.0.1.21:11004".parse().expect("a"),
            7,
        );
        let (content_type, body) = invite_body(&sdp, &xml);
        (content_type, body, ids)
    }

    #[test]
    fn reads_what_the_tpo_sends() {
        let (content_type, body, ids) = floorwire_offer();
        let offer = parse_offer(&content_type, &body).expect("offer");
        assert_eq!(offer.streams.len(), 2);
        assert_eq!(offer.streams[0].label, "1");
        assert_eq!(offer.streams[1].label, "2");
        assert_eq!(offer.streams[0].payload, Some((8, Codec::Pcma)));
        let m = offer.metadata;
        assert_eq!(m.session_id, ids.session);
        assert_eq!(m.call_id, "call-1@127.0.10.1");
        assert_eq!(m.start_time, "2026-12-01T09:00:00.000Z");
        assert_eq!(m.participants.len(), 2);
        assert_eq!(m.participants[0].number, "7101");
        assert_eq!(m.participants[0].name.as_deref(), Some("trader01 <&> desk"));
        assert_eq!(m.participants[1].number, "7111");
        assert_eq!(m.participants[1].name, None);
        assert_eq!(m.facts.get("user").map(String::as_str), Some("trader01"));
        assert_eq!(
            m.facts.get("direction").map(String::as_str),
            Some("internal")
        );
    }

    #[test]
    fn refuses_bodies_that_are_not_recording_sessions() {
        let (content_type, body, _) = floorwire_offer();
        assert!(parse_offer("application/sdp", &body).is_err());
        let text = String::from_utf8_lossy(&body).into_owned();
        let no_metadata = text.replace("application/rs-metadata+xml", "text/plain");
        let err = parse_offer(&content_type, no_metadata.as_bytes()).expect_err("no metadata");
        assert!(err.to_string().contains("rs-metadata"), "{err}");
        assert!(parse_metadata("<recording><session></recording>").is_err());
    }

    #[test]
    fn answer_receives_each_stream_on_its_port() {
        let (content_type, body, _) = floorwire_offer();
        let offer = parse_offer(&content_type, &body).expect("offer");
        let ip: IpAddr = "127.0.1.40".parse().expect("ip");
        let answer = sdp::parse(&answer_sdp(ip, &offer.streams, &[30000, 30002], 1)).expect("sdp");
        let (caller, callee) = floorwire::sip::siprec::answer_streams(&answer).expect("streams");
        assert_eq!(caller, Some(stream_address(ip, 30000)));
        assert_eq!(callee, Some(stream_address(ip, 30002)));
        let refused = vec![OfferedStream {
            label: "1".into(),
            payload: None,
        }];
        let answer = sdp::parse(&answer_sdp(ip, &refused, &[0], 1)).expect("sdp");
        assert_eq!(
            floorwire::sip::siprec::answer_streams(&answer)
                .expect("streams")
                .0,
            None
        );
    }
}
