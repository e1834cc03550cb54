//! SIPREC, the recording client side (sans-IO): the body of the INVITE a session
//! recording client (SRC) sends a session recording server (SRS) for one call
//! (RFC 7866), and what the SRS's answer says.
//!
//! The INVITE carries `multipart/mixed`: an SDP offer with one `sendonly` audio stream
//! per party (`a=label:1` the caller's, `a=label:2` the callee's), and the recording
//! metadata (`application/rs-metadata+xml`, RFC 7865) naming the session, both
//! participants and which stream each sends, with Floorwire's own call facts (user,
//! line, direction) as extension data. The XML is written here (it is output, with
//! its text escaped); nothing here parses XML.

use std::net::SocketAddr;

use base64::Engine;

use crate::error::Error;
use crate::sdp::{self, Session};

/// The metadata namespace of RFC 7865.
pub const METADATA_NS: &str = "urn:ietf:params:xml:ns:recording:1";
/// Floorwire's extension namespace in the metadata.
pub const FLOORWIRE_NS: &str = "urn:floorwire:recording:1";
/// The metadata's content type (RFC 7865 §12).
pub const METADATA_TYPE: &str = "application/rs-metadata+xml";

/// One party of the recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The party's address-of-record (`sip:NUMBER@HOST`).
    pub aor: String,
    /// A display name (the user), if known.
    pub name: Option<String>,
}

/// What the recording says about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMetadata {
    /// The recorded call's Call-ID (its caller's leg).
    pub call_id: String,
    pub caller: Participant,
    pub callee: Participant,
    /// When the call was answered (RFC 3339).
    pub start_time: String,
    /// Floorwire's facts: (name, value) pairs, e.g. `user`, `line`, `direction`.
    pub extension: Vec<(String, String)>,
}

/// A recording session's identifiers (RFC 7865 `ID`: a base64 UUID each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingIds {
    pub session: String,
    pub caller: String,
    pub callee: String,
    pub caller_stream: String,
    pub callee_stream: String,
}

fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl RecordingIds {
    pub fn generate() -> Self {
        Self {
            session: new_id(),
            caller: new_id(),
            callee: new_id(),
            caller_stream: new_id(),
            callee_stream: new_id(),
        }
    }
}

/// `text` with the five XML special characters escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The RFC 7865 metadata document for `m` with `ids`.
pub fn metadata_xml(m: &RecordingMetadata, ids: &RecordingIds) -> String {
    let e = xml_escape;
    let time = e(&m.start_time);
    let participant = |id: &str, p: &Participant| {
        let name = p
            .name
            .as_deref()
            .map(|n| format!("<name>{}</name>", e(n)))
            .unwrap_or_default();
        format!(
            "  <participant participant_id=\"{id}\">\n    <nameID aor=\"{}\">{name}</nameID>\n  </participant>\n",
            e(&p.aor)
        )
    };
    let stream = |id: &str, label: u8| {
        format!(
            "  <stream stream_id=\"{id}\" session_id=\"{}\">\n    <label>{label}</label>\n  </stream>\n",
            ids.session
        )
    };
    let association = |participant: &str, send: &str, recv: &str| {
        format!(
            "  <participantsessionassoc participant_id=\"{participant}\" session_id=\"{}\">\n    <associate-time>{time}</associate-time>\n  </participantsessionassoc>\n  <participantstreamassoc participant_id=\"{participant}\">\n    <send>{send}</send>\n    <recv>{recv}</recv>\n  </participantstreamassoc>\n",
            ids.session
        )
    };
    let extension: String = m
        .extension
        .iter()
        .map(|(k, v)| format!("      <fw:{k}>{}</fw:{k}>\n", e(v)))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<recording xmlns=\"{METADATA_NS}\">\n\
  <datamode>complete</datamode>\n\
  <session session_id=\"{session}\">\n\
    <sipSessionID>{call_id}</sipSessionID>\n\
    <start-time>{time}</start-time>\n\
    <extensiondata xmlns:fw=\"{FLOORWIRE_NS}\">\n\
      <fw:call>\n{extension}      </fw:call>\n\
    </extensiondata>\n\
  </session>\n\
{caller}{callee}{caller_stream}{callee_stream}\
  <sessionrecordingassoc session_id=\"{session}\">\n\
    <associate-time>{time}</associate-time>\n\
  </sessionrecordingassoc>\n\
{caller_assoc}{callee_assoc}\
</recording>\n",
        session = ids.session,
        call_id = e(&m.call_id),
        caller = participant(&ids.caller, &m.caller),
        callee = participant(&ids.callee, &m.callee),
        caller_stream = stream(&ids.caller_stream, 1),
        callee_stream = stream(&ids.callee_stream, 2),
        caller_assoc = association(&ids.caller, &ids.caller_stream, &ids.callee_stream),
        callee_assoc = association(&ids.callee, &ids.callee_stream, &ids.caller_stream),
    )
}

/// The SDP offer: two `sendonly` audio streams, the caller's from `caller_from`
/// (`a=label:1`) and the callee's from `callee_from` (`a=label:2`), offering G.711
/// (both laws) and telephone events, as the call itself may carry any of them.
pub fn offer_sdp(caller_from: SocketAddr, callee_from: SocketAddr, session_id: u64) -> Vec<u8> {
    let ip = caller_from.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let media = |port: u16, label: u8| {
        format!(
            "m=audio {port} RTP/AVP 8 0 101\r\nc=IN {family} {}\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:{label}\r\na=sendonly\r\n",
            if label == 1 {
                caller_from.ip()
            } else {
                callee_from.ip()
            }
        )
    };
    format!(
        "v=0\r\no=floorwire {session_id} 1 IN {family} {ip}\r\ns=SIPREC\r\nt=0 0\r\n{}{}",
        media(caller_from.port(), 1),
        media(callee_from.port(), 2)
    )
    .into_bytes()
}

/// The INVITE body: `multipart/mixed` with the SDP offer and the metadata. Returns the
/// Content-Type (with its boundary) and the body.
pub fn invite_body(sdp: &[u8], metadata: &str) -> (String, Vec<u8>) {
    let boundary = format!("floorwire-{}", new_id().replace(['+', '/', '='], ""));
    let mut body = Vec::with_capacity(sdp.len() + metadata.len() + 256);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/sdp\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(sdp);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: {METADATA_TYPE}\r\nContent-Disposition: recording-session\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(metadata.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed;boundary={boundary}"), body)
}

/// Where the SRS wants each stream: (the caller's, the callee's), from its SDP answer.
/// Streams are matched by `a=label`, else taken in order; a stream the SRS refused
/// (port 0) or put `inactive` is `None`.
pub fn answer_streams(answer: &Session) -> Result<(Option<SocketAddr>, Option<SocketAddr>), Error> {
    let audio: Vec<_> = answer
        .medias
        .iter()
        .filter(|m| m.media == "audio")
        .collect();
    if audio.is_empty() {
        return Err(Error::Sdp(
            "the recorder's answer has no audio stream".into(),
        ));
    }
    let label_of = |m: &sdp_types::Media| {
        m.attributes
            .iter()
            .find(|a| a.attribute == "label")
            .and_then(|a| a.value.clone())
    };
    let endpoint = |m: &sdp_types::Media| -> Option<SocketAddr> {
        if m.port == 0 || sdp::direction(answer, m) == sdp::Direction::Inactive {
            return None;
        }
        let ip = m
            .connections
            .first()
            .or(answer.connection.as_ref())
            .and_then(|c| c.connection_address.split('/').next()?.parse().ok())?;
        Some(SocketAddr::new(ip, m.port))
    };
    let by_label = |label: &str| audio.iter().find(|m| label_of(m).as_deref() == Some(label));
    let caller = by_label("1").or(audio.first()).and_then(|m| endpoint(m));
    let callee = by_label("2").or(audio.get(1)).and_then(|m| endpoint(m));
    Ok((caller, callee))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> RecordingMetadata {
        RecordingMetadata {
            call_id: "abc@127.0.10.5".into(),
            caller: Participant {
                aor: "sip:7001@127.0.1.21".into(),
                name: Some("trader01".into()),
            },
            callee: Participant {
                aor: "sip:7002@127.0.1.21".into(),
                name: Some("O'Brien & <Co>".into()),
            },
            start_time: "2026-12-01T09:30:00.000Z".into(),
            extension: vec![
                ("user".into(), "trader01".into()),
                ("line".into(), "PW-GS".into()),
                ("direction".into(), "internal".into()),
            ],
        }
    }

    #[test]
    fn metadata_names_the_session_participants_and_their_streams() {
        let ids = RecordingIds::generate();
        let xml = metadata_xml(&metadata(), &ids);
        assert!(xml.contains(&format!("<recording xmlns=\"{METADATA_NS}\">")));
        assert!(xml.contains("<sipSessionID>abc@127.0.10.5</sipSessionID>"));
        assert!(xml.contains("<nameID aor=\"sip:7001@127.0.1.21\"><name>trader01</name>"));
        assert!(
            xml.contains("<name>O&apos;Brien &amp; &lt;Co&gt;</name>"),
            "{xml}"
        );
        assert!(xml.contains("<fw:line>PW-GS</fw:line>"));
        // The caller sends stream 1 and receives stream 2.
        assert!(xml.contains(&format!(
            "<participantstreamassoc participant_id=\"{}\">\n    <send>{}</send>\n    <recv>{}</recv>",
            ids.caller, ids.caller_stream, ids.callee_stream
        )));
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&ids.session)
                .unwrap()
                .len(),
            16
        );
    }

    #[test]
    fn the_offer_is_two_labelled_sendonly_streams_in_a_multipart_body() {
        let caller: SocketAddr = "127.0.1.21:11002".parse().unwrap();
        let callee: SocketAddr = "127.0.1.21:11000".parse().unwrap();
        let offer = offer_sdp(caller, callee, 7);
        let session = sdp::parse(&offer).expect("our offer parses");
        assert_eq!(session.medias.len(), 2);
        for (m, label) in session.medias.iter().zip(["1", "2"]) {
            assert_eq!(sdp::direction(&session, m), sdp::Direction::SendOnly);
            assert!(
                m.attributes
                    .iter()
                    .any(|a| a.attribute == "label" && a.value.as_deref() == Some(label))
            );
        }
        let (content_type, body) = invite_body(&offer, "<recording/>");
        let boundary = content_type
            .strip_prefix("multipart/mixed;boundary=")
            .unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!(
            "--{boundary}\r\nContent-Type: application/sdp\r\n\r\nv=0"
        )));
        assert!(text.contains("Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n<recording/>"));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }

    #[test]
    fn the_answer_says_where_each_stream_goes() {
        let answer = sdp::parse(
            b"v=0\r\no=srs 1 1 IN IP4 127.0.1.40\r\ns=-\r\nc=IN IP4 127.0.1.40\r\nt=0 0\r\n\
m=audio 20002 RTP/AVP 8\r\na=label:2\r\na=recvonly\r\n\
m=audio 20000 RTP/AVP 8\r\na=label:1\r\na=recvonly\r\n",
        )
        .unwrap();
        let (caller, callee) = answer_streams(&answer).unwrap();
        assert_eq!(
            caller,
            Some("127.0.1.40:20000".parse().unwrap()),
            "by label"
        );
        assert_eq!(callee, Some("127.0.1.40:20002".parse().unwrap()));
        let refused = sdp::parse(
            b"v=0\r\no=srs 1 1 IN IP4 127.0.1.40\r\ns=-\r\nc=IN IP4 127.0.1.40\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 8\r\na=recvonly\r\nm=audio 0 RTP/AVP 8\r\n",
        )
        .unwrap();
        assert_eq!(
            answer_streams(&refused).unwrap(),
            (Some("127.0.1.40:20000".parse().unwrap()), None)
        );
    }
}
