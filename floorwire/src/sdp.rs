//! SDP offer/answer for voice (RFC 3264, RFC 8866) on `sdp-types` sessions:
//! codec intersection over PCMA, PCMU, G.722 and telephone-event, anchoring media on
//! our relay (rewriting `c=` and the `m=` port), and hold (sendonly / inactive).

use std::net::{IpAddr, SocketAddr};

pub use sdp_types::Session;
use sdp_types::{Attribute, Connection, Media, Origin};

use crate::error::Error;

/// Codecs a Floorwire element can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722, static payload type 9 (clock rate 8000 on the wire, RFC 3551 §4.5.2).
    G722,
    /// RFC 4733 DTMF events, dynamic payload type.
    TelephoneEvent,
}

impl Codec {
    /// Encoding name as in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
            Self::TelephoneEvent => "telephone-event",
        }
    }

    /// Static payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::G722 => Some(9),
            Self::TelephoneEvent => None,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Pcmu, Self::Pcma, Self::G722, Self::TelephoneEvent]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// Media direction attribute (RFC 3264 §6.1, §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// What the answerer puts against this offered direction.
    pub fn answer(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            d => d,
        }
    }
}

/// A negotiated payload: codec and the payload type used on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub codec: Codec,
    pub payload_type: u8,
}

/// Parses an SDP body.
pub fn parse(body: &[u8]) -> Result<Session, Error> {
    Session::parse(body).map_err(|e| Error::Sdp(e.to_string()))
}

/// Serialises a session (CRLF line ends).
pub fn to_bytes(session: &Session) -> Vec<u8> {
    // Room for a usual offer or answer (~250-400 bytes) at once: grown from empty it
    // was reallocated three or four times, for every SDP a call relays.
    let mut out = Vec::with_capacity(512);
    // Writing to a Vec cannot fail.
    let _ = session.write(&mut out);
    out
}

/// The direction of a media description (media attribute, else session, else sendrecv).
pub fn direction(session: &Session, media: &Media) -> Direction {
    let find = |attrs: &[Attribute]| {
        attrs
            .iter()
            .find_map(|a| match a.attribute.to_ascii_lowercase().as_str() {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            })
    };
    find(&media.attributes)
        .or_else(|| find(&session.attributes))
        .unwrap_or(Direction::SendRecv)
}

fn set_direction(media: &mut Media, direction: Direction) {
    media.attributes.retain(|a| {
        !matches!(
            a.attribute.to_ascii_lowercase().as_str(),
            "sendrecv" | "sendonly" | "recvonly" | "inactive"
        )
    });
    media.attributes.push(Attribute::new(direction.attribute()));
}

/// The payloads of a media description that we understand, in its order. A dynamic
/// payload type counts only at the clock rate we would answer with (8000 Hz), so an
/// answer never changes what a payload type means (RFC 3264 §6.1).
pub fn payloads(media: &Media) -> Vec<Payload> {
    media
        .fmt
        .split_whitespace()
        .filter_map(|pt| pt.parse::<u8>().ok())
        .filter_map(|pt| {
            let rtpmap = media.attributes.iter().find_map(|a| {
                let value = a.value.as_deref()?;
                let (num, rest) = value.split_once(' ')?;
                (a.attribute.eq_ignore_ascii_case("rtpmap") && num.trim().parse() == Ok(pt))
                    .then(|| rest.trim().to_owned())
            });
            let codec = match rtpmap {
                Some(encoding) => {
                    let mut parts = encoding.split('/');
                    let name = parts.next().unwrap_or("");
                    let rate = parts.next().and_then(|r| r.trim().parse::<u32>().ok());
                    if rate != Some(8000) {
                        return None;
                    }
                    Codec::from_name(name)?
                }
                None => [Codec::Pcmu, Codec::Pcma, Codec::G722]
                    .into_iter()
                    .find(|c| c.static_payload_type() == Some(pt))?,
            };
            Some(Payload {
                codec,
                payload_type: pt,
            })
        })
        .collect()
}

/// Where the peer wants the first audio stream sent: `c=` address and `m=` port.
pub fn audio_endpoint(session: &Session) -> Option<SocketAddr> {
    let media = session
        .medias
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)?;
    let connection = media.connections.first().or(session.connection.as_ref())?;
    let ip: IpAddr = connection
        .connection_address
        .split('/')
        .next()?
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, media.port))
}

fn rtpmap_line(p: Payload) -> String {
    let rate = 8000;
    format!("{} {}/{rate}", p.payload_type, p.codec.name())
}

fn audio_media(
    port: u16,
    payloads: &[Payload],
    direction: Direction,
    dtmf_fmtp: Option<&str>,
) -> Media {
    let fmt = payloads
        .iter()
        .map(|p| p.payload_type.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let mut media = Media {
        media: "audio".into(),
        port,
        num_ports: None,
        proto: "RTP/AVP".into(),
        fmt,
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    };
    for p in payloads {
        media
            .attributes
            .push(Attribute::with_value("rtpmap", rtpmap_line(*p)));
        if p.codec == Codec::TelephoneEvent {
            media.attributes.push(Attribute::with_value(
                "fmtp",
                format!("{} {}", p.payload_type, dtmf_fmtp.unwrap_or("0-16")),
            ));
        }
    }
    media.attributes.push(Attribute::with_value("ptime", "20"));
    set_direction(&mut media, direction);
    media
}

/// An empty session of ours: origin and connection at `media`'s address.
fn session_at(media: SocketAddr, session_id: u64) -> Session {
    let mut session = Session::new(
        Origin::with_ip_addr(session_id, session_id, media.ip()),
        "floorwire",
    );
    session.origin.set_username("floorwire");
    session.connection = Some(Connection::from_ip_addr(media.ip()));
    session
}

/// An offer for one audio stream at `media` with `codecs` in preference order.
pub fn offer(codecs: &[Codec], media: SocketAddr, session_id: u64) -> Session {
    let payloads: Vec<Payload> = codecs
        .iter()
        .map(|&codec| Payload {
            codec,
            payload_type: codec.static_payload_type().unwrap_or(101),
        })
        .collect();
    let mut session = session_at(media, session_id);
    session.medias.push(audio_media(
        media.port(),
        &payloads,
        Direction::SendRecv,
        None,
    ));
    session
}

/// Answers `offer` (RFC 3264 §6): per audio stream, the offered payloads we support
/// (offerer's order, `supported` filters), telephone-event kept with the offered
/// payload type; the answer anchored at `media`; directions mirrored. Streams of other
/// types are refused with port 0. Fails with [`Error::NoCommonCodec`] (488) when no
/// audio stream has a voice codec in common.
pub fn answer(
    offer: &Session,
    supported: &[Codec],
    media: SocketAddr,
    session_id: u64,
) -> Result<Session, Error> {
    let mut session = session_at(media, session_id);
    let mut voice = false;
    let mut port = Some(media.port());
    for m in &offer.medias {
        let accepted: Vec<Payload> = payloads(m)
            .into_iter()
            .filter(|p| supported.contains(&p.codec))
            .collect();
        let has_voice = accepted.iter().any(|p| p.codec != Codec::TelephoneEvent);
        // Only plain RTP/AVP is carried: an SRTP or DTLS offer is refused, not
        // answered with a different transport.
        let plain_rtp = m.proto.eq_ignore_ascii_case("RTP/AVP");
        if m.media != "audio" || m.port == 0 || !has_voice || !plain_rtp || port.is_none() {
            // Refused stream: same media type and format, port 0 (§6).
            let mut refused = m.clone();
            refused.port = 0;
            refused.connections.clear();
            refused.attributes.clear();
            session.medias.push(refused);
            continue;
        }
        voice = true;
        let dtmf_fmtp = m.attributes.iter().find_map(|a| {
            let v = a.value.as_deref()?;
            let (pt, params) = v.split_once(' ')?;
            let dtmf = accepted.iter().find(|p| p.codec == Codec::TelephoneEvent)?;
            (a.attribute.eq_ignore_ascii_case("fmtp") && pt.parse() == Ok(dtmf.payload_type))
                .then(|| params.to_owned())
        });
        let d = direction(offer, m).answer();
        // Only the first audio stream is anchored; later ones are refused above.
        session.medias.push(audio_media(
            port.take().unwrap_or(0),
            &accepted,
            d,
            dtmf_fmtp.as_deref(),
        ));
    }
    if voice {
        Ok(session)
    } else {
        Err(Error::NoCommonCodec)
    }
}

/// Rewrites every `c=` and the audio `m=` port so media flows through `anchor`
/// (the B2BUA's relay leg).
pub fn anchor(session: &mut Session, anchor: SocketAddr) {
    session.origin.set_unicast_ip_address(anchor.ip());
    if let Some(c) = session.connection.as_mut() {
        c.set_connection_ip_address(anchor.ip());
    }
    for m in session
        .medias
        .iter_mut()
        .filter(|m| m.media == "audio" && m.port != 0)
    {
        m.port = anchor.port();
        for c in m.connections.iter_mut() {
            c.set_connection_ip_address(anchor.ip());
        }
    }
    session.origin.sess_version = session.origin.sess_version.wrapping_add(1);
}

/// What [`anchor`] then [`to_bytes`] make of `session`, with `session` left as it was:
/// the B2BUA relays the offer and the answer anchored while keeping the original.
/// A clone to anchor was a dozen allocations an SDP (every string of the session);
/// here the few fields [`anchor`] writes are swapped out and back.
pub fn anchored_bytes(session: &mut Session, at: SocketAddr) -> Vec<u8> {
    /// An address's type and text, swapped out of a `c=` or `o=` line.
    type Saved = (sdp_types::AddrType, String);
    fn take_connection(c: &mut Connection) -> Saved {
        (
            std::mem::replace(&mut c.addrtype, sdp_types::AddrType::Ip4),
            std::mem::take(&mut c.connection_address),
        )
    }
    fn put_connection(c: &mut Connection, (addrtype, address): Saved) {
        c.addrtype = addrtype;
        c.connection_address = address;
    }
    let origin: Saved = (
        std::mem::replace(&mut session.origin.addrtype, sdp_types::AddrType::Ip4),
        std::mem::take(&mut session.origin.unicast_address),
    );
    let version = session.origin.sess_version;
    let connection = session.connection.as_mut().map(take_connection);
    // (the media's index, its port, its own c= lines) for each one anchor rewrites.
    let medias: Vec<(usize, u16, Vec<Saved>)> = session
        .medias
        .iter_mut()
        .enumerate()
        .filter(|(_, m)| m.media == "audio" && m.port != 0)
        .map(|(i, m)| {
            let connections = m.connections.iter_mut().map(take_connection).collect();
            (i, m.port, connections)
        })
        .collect();
    anchor(session, at);
    let bytes = to_bytes(session);
    (session.origin.addrtype, session.origin.unicast_address) = origin;
    session.origin.sess_version = version;
    if let (Some(c), Some(saved)) = (session.connection.as_mut(), connection) {
        put_connection(c, saved);
    }
    for (i, port, connections) in medias {
        let m = &mut session.medias[i];
        m.port = port;
        for (c, saved) in m.connections.iter_mut().zip(connections) {
            put_connection(c, saved);
        }
    }
    bytes
}

/// Puts every audio stream on hold (RFC 3264 §8.4): sendrecv → sendonly,
/// recvonly → inactive.
pub fn hold(session: &mut Session) {
    let directions: Vec<Direction> = session
        .medias
        .iter()
        .map(|m| direction(session, m))
        .collect();
    for (m, d) in session.medias.iter_mut().zip(directions) {
        if m.media == "audio" {
            let held = match d {
                Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
                Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
            };
            set_direction(m, held);
        }
    }
    session.attributes.retain(|a| {
        !matches!(
            a.attribute.as_str(),
            "sendrecv" | "sendonly" | "recvonly" | "inactive"
        )
    });
    session.origin.sess_version = session.origin.sess_version.wrapping_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anchored bytes are what a clone, anchored and written, gives, and the session
    /// is left as it was: with and without session- and media-level `c=` lines, a
    /// held stream (port 0) and a video stream, over IPv4 and IPv6.
    #[test]
    fn anchored_bytes_match_a_clone_anchored_and_leave_the_session_as_it_was() {
        let media_level = "v=0\r\no=- 7 7 IN IP6 2001:db8::1\r\ns=-\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\nc=IN IP6 2001:db8::2\r\nc=IN IP4 192.0.2.9\r\n\
m=audio 0 RTP/AVP 8\r\nc=IN IP4 192.0.2.7\r\nm=video 6000 RTP/AVP 31\r\nc=IN IP4 192.0.2.8\r\n";
        for text in [OFFER, media_level] {
            for at in ["127.0.0.1:20000", "[::1]:20002"] {
                let at: SocketAddr = at.parse().expect("address");
                let mut session = parse(text.as_bytes()).expect("SDP");
                let original = session.clone();
                let mut anchored = session.clone();
                anchor(&mut anchored, at);
                assert_eq!(
                    anchored_bytes(&mut session, at),
                    to_bytes(&anchored),
                    "{text}"
                );
                assert_eq!(session, original, "{text}");
            }
        }
    }

    const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 49170 RTP/AVP 9 0 8 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
m=video 51372 RTP/AVP 31\r\n";

    #[test]
    fn answer_intersects_and_anchors() {
        let offer = parse(OFFER.as_bytes()).expect("offer");
        let anchor: SocketAddr = "127.0.1.21:11000".parse().expect("addr");
        let answer = answer(
            &offer,
            &[Codec::Pcma, Codec::Pcmu, Codec::TelephoneEvent],
            anchor,
            7,
        )
        .expect("answer");
        let text = String::from_utf8(to_bytes(&answer)).expect("utf8");
        assert!(text.contains("m=audio 11000 RTP/AVP 0 8 101\r\n"), "{text}");
        assert!(text.contains("a=fmtp:101 0-15\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 31\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 127.0.1.21\r\n"), "{text}");
        assert_eq!(audio_endpoint(&answer), Some(anchor));
        let back = parse(&to_bytes(&answer)).expect("reparse");
        assert_eq!(payloads(&back.medias[0]).len(), 3);
    }

    #[test]
    fn wideband_events_and_srtp_are_not_answered() {
        let text = OFFER.replace(
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:101 telephone-event/48000",
        );
        let offer = parse(text.as_bytes()).expect("offer");
        let anchor: SocketAddr = "127.0.0.1:11000".parse().expect("addr");
        let a = answer(&offer, &[Codec::Pcma, Codec::TelephoneEvent], anchor, 1).expect("answer");
        let text = String::from_utf8(to_bytes(&a)).expect("utf8");
        assert!(text.contains("m=audio 11000 RTP/AVP 8\r\n"), "{text}");
        let srtp =
            parse(OFFER.replace("RTP/AVP 9 0 8", "RTP/SAVP 9 0 8").as_bytes()).expect("offer");
        assert!(matches!(
            answer(&srtp, &[Codec::Pcma], anchor, 1),
            Err(Error::NoCommonCodec)
        ));
    }

    #[test]
    fn no_common_codec_is_refused() {
        let offer = parse(OFFER.replace("9 0 8 96 101", "96").as_bytes()).expect("offer");
        let anchor: SocketAddr = "127.0.0.1:11000".parse().expect("addr");
        assert!(matches!(
            answer(&offer, &[Codec::Pcma], anchor, 1),
            Err(Error::NoCommonCodec)
        ));
    }

    #[test]
    fn hold_and_mirrored_direction() {
        let media: SocketAddr = "127.0.0.1:11002".parse().expect("addr");
        let mut o = offer(&[Codec::Pcma, Codec::TelephoneEvent], media, 3);
        hold(&mut o);
        assert_eq!(direction(&o, &o.medias[0]), Direction::SendOnly);
        let a = answer(&o, &[Codec::Pcma], media, 4).expect("answer");
        assert_eq!(direction(&a, &a.medias[0]), Direction::RecvOnly);
        hold(&mut o);
        let reparsed = parse(&to_bytes(&o)).expect("reparse");
        assert_eq!(
            direction(&reparsed, &reparsed.medias[0]),
            Direction::SendOnly
        );
        let mut inactive = parse(&to_bytes(&a)).expect("answer");
        hold(&mut inactive);
        assert_eq!(
            direction(&inactive, &inactive.medias[0]),
            Direction::Inactive
        );
    }
}
