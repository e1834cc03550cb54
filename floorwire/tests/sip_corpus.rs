//! RFC 4475 and RFC 5118 torture messages: every file gets the verdict its MANIFEST.tsv
//! gives, from the layer that owns it. The corpora live in `../shared/corpora/`.

use std::collections::HashMap;
use std::path::PathBuf;

use floorwire::sip::MessageIds;
use floorwire::sip::auth::{Algorithm, AuthVerdict, DigestServer};
use floorwire::sip::ingress::{Inbound, Rejection, parse_datagram, parse_datagram_with_ids};
use floorwire::sip::msg::{Header, Request};
use floorwire::sip::syntax::{parse_name_addr, split_list};
use floorwire::sip::uas::{UasPolicy, check_proxy_request, check_request, header_text};

fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(corpus(rel))
        .unwrap_or_else(|e| panic!("corpus file {rel}: {e} (is ../shared beside the repo?)"))
}

/// Manifest rows: file → verdict.
fn manifest(rel: &str) -> Vec<(String, String)> {
    let text = String::from_utf8(read(rel)).expect("manifest utf8");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            // Both manifests keep the verdict in the fourth column.
            (cols[0].to_owned(), cols[3].to_owned())
        })
        .collect()
}

/// What our stack does with a datagram, reduced to something a table can state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    AcceptRequest,
    AcceptResponse,
    Reply(u16),
    Drop,
}

fn outcome(result: &Result<Inbound, Rejection>) -> Outcome {
    match result {
        Ok(Inbound::Request(_)) => Outcome::AcceptRequest,
        Ok(Inbound::Response(_)) => Outcome::AcceptResponse,
        Ok(Inbound::KeepAlive) => Outcome::Drop,
        Err(r) => match (r.status, r.response()) {
            (Some(code), Some(_)) => Outcome::Reply(code),
            _ => Outcome::Drop,
        },
    }
}

fn request(result: Result<Inbound, Rejection>) -> Request {
    match result {
        Ok(Inbound::Request(r)) => r,
        Err(Rejection { head: Some(r), .. }) => *r,
        other => panic!("no request: {other:?}"),
    }
}

/// Identifiers a `valid` file must parse to, read off the files by hand:
/// (Call-ID, From tag, CSeq number, CSeq method, top Via branch).
/// (Call-ID, From tag, CSeq number, CSeq method, top Via branch).
type ExpectedIds = (
    &'static str,
    Option<&'static str>,
    u32,
    &'static str,
    Option<&'static str>,
);

fn expected_ids() -> HashMap<&'static str, ExpectedIds> {
    HashMap::from([
        (
            "wsinv.dat",
            (
                "wsinv.ndaksdj@192.0.2.1",
                Some("98asjd8"),
                9,
                "INVITE",
                Some("390skdjuw"),
            ),
        ),
        (
            "intmeth.dat",
            (
                "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
                Some("_token~1'+`*%!-."),
                139122385,
                "!interesting-Method0123456789_*+`.%indeed'~",
                Some("z9hG4bK-.!%66*_+`'~"),
            ),
        ),
        (
            "esc01.dat",
            (
                "esc01.239409asdfakjkn23onasd0-3234",
                Some("938"),
                234234,
                "INVITE",
                Some("z9hG4bKkdjuw"),
            ),
        ),
        (
            "escnull.dat",
            (
                "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
                Some("839923423"),
                14398234,
                "REGISTER",
                Some("z9hG4bKkdjuw"),
            ),
        ),
        (
            "esc02.dat",
            (
                "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
                Some("f232jadfj23"),
                29344,
                "RE%47IST%45R",
                Some("z9hG4bK209%fzsnel234"),
            ),
        ),
        (
            "lwsdisp.dat",
            (
                "lwsdisp.1234abcd@funky.example.com",
                Some("323"),
                60,
                "OPTIONS",
                Some("z9hG4bKkdjuw"),
            ),
        ),
        (
            "longreq.dat",
            (
                "longreq.onereallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallyreallylongcallid",
                Some(
                    "12982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982982424",
                ),
                3882340,
                "INVITE",
                None,
            ),
        ),
        (
            "dblreq.dat",
            (
                "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
                Some("43251j3j324"),
                8,
                "REGISTER",
                Some("z9hG4bKkdjuw23492"),
            ),
        ),
        (
            "semiuri.dat",
            (
                "semiuri.0ha0isndaksdj",
                Some("33242"),
                8,
                "OPTIONS",
                Some("z9hG4bKkdjuw"),
            ),
        ),
        (
            "transports.dat",
            (
                "transports.kijh4akdnaqjkwendsasfdj",
                Some("323"),
                60,
                "OPTIONS",
                Some("z9hG4bKkdjuw"),
            ),
        ),
        (
            "mpart01.dat",
            (
                "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
                Some("2fb0dcc9"),
                1,
                "MESSAGE",
                Some("z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-"),
            ),
        ),
        (
            "unreason.dat",
            (
                "unreason.1234ksdfak3j2erwedfsASdf",
                Some("11141343"),
                35,
                "INVITE",
                Some("z9hG4bK1324923"),
            ),
        ),
        (
            "noreason.dat",
            (
                "noreason.asndj203insdf99223ndf",
                Some("39ansfi3"),
                35,
                "INVITE",
                Some("z9hG4bK2398ndaoe"),
            ),
        ),
        (
            "inv2543.dat",
            (
                "inv2543.1717@ift.client.example.com",
                None,
                56,
                "INVITE",
                None,
            ),
        ),
    ])
}

/// Our outcome per RFC 4475 file at the message layer.
fn rfc4475_table() -> HashMap<&'static str, Outcome> {
    use Outcome::*;
    HashMap::from([
        // valid: parse (extension methods cannot be represented, so 501 + Allow)
        ("wsinv.dat", AcceptRequest),
        ("intmeth.dat", Reply(501)),
        ("esc01.dat", AcceptRequest),
        ("escnull.dat", AcceptRequest),
        ("esc02.dat", Reply(501)),
        ("lwsdisp.dat", AcceptRequest),
        ("longreq.dat", AcceptRequest),
        ("dblreq.dat", AcceptRequest),
        ("semiuri.dat", AcceptRequest),
        ("transports.dat", AcceptRequest),
        ("mpart01.dat", AcceptRequest),
        ("unreason.dat", AcceptResponse),
        ("noreason.dat", AcceptResponse),
        ("inv2543.dat", AcceptRequest),
        // invalid
        ("badinv01.dat", Reply(400)),
        ("clerr.dat", Reply(400)),
        ("ncl.dat", Reply(400)),
        ("scalar02.dat", Reply(400)),
        ("scalarlg.dat", Drop),
        ("quotbal.dat", Reply(400)),
        ("ltgtruri.dat", Reply(400)),
        ("lwsruri.dat", Reply(400)),
        ("lwsstart.dat", Reply(400)),
        ("trws.dat", Reply(400)),
        ("escruri.dat", Reply(400)),
        // "Reject only if Date matters": it does not to us.
        ("baddate.dat", AcceptRequest),
        ("regbadct.dat", Reply(400)),
        ("badaspec.dat", Reply(400)),
        // The archive copy has no empty line after the headers: unframeable, dropped.
        // The terminated variant is checked below (400).
        ("baddn.dat", Drop),
        ("badvers.dat", Reply(505)),
        ("mismatch01.dat", Reply(400)),
        ("mismatch02.dat", Reply(501)),
        ("bigcode.dat", Drop),
        ("insuf.dat", Reply(400)),
        ("multi01.dat", Reply(400)),
        ("mcl01.dat", Reply(400)),
        // valid-syntax: parse here, answered by the application layers below
        ("badbranch.dat", AcceptRequest),
        ("unkscm.dat", AcceptRequest),
        ("novelsc.dat", AcceptRequest),
        ("unksm2.dat", AcceptRequest),
        ("bext01.dat", AcceptRequest),
        ("invut.dat", AcceptRequest),
        ("regaut01.dat", AcceptRequest),
        ("bcast.dat", AcceptResponse),
        ("zeromf.dat", AcceptRequest),
        ("cparam01.dat", AcceptRequest),
        ("cparam02.dat", AcceptRequest),
        ("regescrt.dat", AcceptRequest),
        ("sdp01.dat", AcceptRequest),
        // not a test case of the RFC: only "does not panic"
        ("test.dat", Drop),
    ])
}

#[test]
fn rfc4475_every_file_gets_its_verdict() {
    let table = rfc4475_table();
    let ids = expected_ids();
    for (file, verdict) in manifest("rfc4475/MANIFEST.tsv") {
        let bytes = read(&format!("rfc4475/{file}"));
        let result = parse_datagram(&bytes);
        let got = outcome(&result);
        let want = table
            .get(file.as_str())
            .unwrap_or_else(|| panic!("{file} missing from our table"));
        assert_eq!(&got, want, "{file} ({verdict}): {result:?}");
        // The table must agree with the manifest's class.
        match verdict.as_str() {
            "valid" => assert!(
                matches!(
                    got,
                    Outcome::AcceptRequest | Outcome::AcceptResponse | Outcome::Reply(501)
                ),
                "{file}: valid must parse"
            ),
            "invalid" if file != "baddate.dat" => assert!(
                matches!(got, Outcome::Reply(400 | 505 | 501) | Outcome::Drop),
                "{file}: invalid must be answered 400/505/501 or dropped"
            ),
            "valid-syntax" => assert!(
                matches!(got, Outcome::AcceptRequest | Outcome::AcceptResponse),
                "{file}"
            ),
            _ => {}
        }
        if let Some(&(call_id, from_tag, cseq, method, branch)) = ids.get(file.as_str()) {
            let m = match &result {
                Ok(Inbound::Request(r)) => MessageIds::of(r),
                Ok(Inbound::Response(r)) => MessageIds::of(r),
                Err(Rejection { head: Some(r), .. }) => MessageIds::of(r.as_ref()),
                other => panic!("{file}: {other:?}"),
            };
            assert_eq!(
                m.call_id.as_ref().map(|c| c.as_str()),
                Some(call_id),
                "{file} Call-ID"
            );
            assert_eq!(
                m.from_tag.as_ref().map(|t| t.as_str()),
                from_tag,
                "{file} From tag"
            );
            assert_eq!(m.cseq, Some((cseq, method.into())), "{file} CSeq");
            assert_eq!(
                m.branch.as_ref().map(|b| b.as_str()),
                branch,
                "{file} branch"
            );
        }
    }
}

#[test]
fn rfc4475_replies_are_well_formed_and_routable() {
    // badinv01 and badvers are left out: their replies copy the peer's own Via
    // (malformed, SIP/7.0), as §8.2.6.2 requires.
    for file in ["clerr.dat", "lwsruri.dat", "intmeth.dat", "mcl01.dat"] {
        let bytes = read(&format!("rfc4475/{file}"));
        let Err(rejection) = parse_datagram(&bytes) else {
            panic!("{file} accepted")
        };
        let response = rejection.response().expect("a response");
        // Our own answer must pass our own ingress.
        match parse_datagram(&response.to_bytes()) {
            Ok(Inbound::Response(r)) => {
                assert_eq!(Some(r.status_code.code()), rejection.status, "{file}");
                assert!(MessageIds::of(&r).to_tag.is_some(), "{file}: To tag");
                if rejection.status == Some(501) {
                    assert!(
                        r.headers.iter().any(|h| matches!(h, Header::Allow(_))),
                        "{file}: Allow"
                    );
                }
            }
            other => panic!("{file}: our reply does not parse: {other:?}"),
        }
    }
}

#[test]
fn rfc4475_message_layer_details() {
    // dblreq: the REGISTER only, no trailing INVITE octets.
    let r = request(parse_datagram(&read("rfc4475/dblreq.dat")));
    assert!(r.body.is_empty());
    // mpart01: binary body framed by Content-Length, NULs kept.
    let r = request(parse_datagram(&read("rfc4475/mpart01.dat")));
    let declared: usize = header_text(&r, "Content-Length")
        .expect("CL")
        .trim()
        .parse()
        .expect("n");
    assert_eq!(r.body.len(), declared);
    assert!(r.body.contains(&0));
    // inv2543: no Content-Length over UDP: the body is the rest of the datagram.
    let r = request(parse_datagram(&read("rfc4475/inv2543.dat")));
    assert!(String::from_utf8_lossy(&r.body).starts_with("v=0"));
    // semiuri: the user part keeps ';par=u@example.net' (escaped).
    let r = request(parse_datagram(&read("rfc4475/semiuri.dat")));
    assert_eq!(r.uri.user(), Some("user;par=u%40example.net"));
    // esc02: two Contact values, not three (C%6Fntact is another header).
    let r = request(parse_datagram(&read("rfc4475/esc02.dat")));
    assert_eq!(
        r.headers
            .iter()
            .filter(|h| matches!(h, Header::Contact(_)))
            .count(),
        2
    );
    // escnull: two distinct contacts, %00 not truncating.
    let r = request(parse_datagram(&read("rfc4475/escnull.dat")));
    let contacts: Vec<String> = r
        .headers
        .iter()
        .filter(|h| matches!(h, Header::Contact(_)))
        .flat_map(|h| split_list(h.value()).map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(contacts.len(), 2);
    assert_ne!(contacts[0], contacts[1]);
    assert!(contacts.iter().all(|c| c.contains("%00")));
    // A malformed ACK is dropped, never answered (§17): mismatch01 sent as an ACK.
    let text =
        String::from_utf8_lossy(&read("rfc4475/mismatch01.dat")).replacen("OPTIONS ", "ACK ", 1);
    assert_eq!(outcome(&parse_datagram(text.as_bytes())), Outcome::Drop);
    // baddn: the terminated variant is answered 400.
    let result = parse_datagram(&read("rfc4475/variants/baddn.terminated.dat"));
    assert_eq!(outcome(&result), Outcome::Reply(400));
}

#[test]
fn rfc4475_application_layer_answers() {
    let uas = UasPolicy::default();
    let registrar = UasPolicy {
        methods: vec![floorwire::sip::msg::Method::Register],
        registrar: true,
        ..UasPolicy::default()
    };
    let get = |f: &str| request(parse_datagram(&read(&format!("rfc4475/{f}"))));
    let status = |r: Result<(), floorwire::sip::uas::Refusal>| r.err().map(|e| e.status);
    assert_eq!(status(check_request(&get("unkscm.dat"), &uas)), Some(416));
    assert_eq!(status(check_request(&get("novelsc.dat"), &uas)), Some(416));
    assert_eq!(
        status(check_request(&get("unksm2.dat"), &registrar)),
        Some(400)
    );
    assert!(
        check_proxy_request(&get("unksm2.dat"), &[]).is_ok(),
        "proxies treat unksm2 normally"
    );
    let bext = check_request(&get("bext01.dat"), &uas).expect_err("420");
    assert_eq!(bext.status, 420);
    assert!(
        bext.headers
            .iter()
            .any(|(n, v)| n == "Unsupported" && v.contains("nothingSupportsThis")),
        "{bext:?}"
    );
    assert_eq!(
        check_proxy_request(&get("bext01.dat"), &[]).map_err(|e| e.status),
        Err(420)
    );
    let invut = check_request(&get("invut.dat"), &uas).expect_err("415");
    assert_eq!(invut.status, 415);
    assert!(invut.headers.iter().any(|(n, _)| n == "Accept"));
    assert_eq!(status(check_request(&get("sdp01.dat"), &uas)), Some(406));
    assert_eq!(
        check_proxy_request(&get("zeromf.dat"), &[]).map_err(|e| e.status),
        Err(483)
    );
    assert!(
        check_request(&get("zeromf.dat"), &uas).is_ok(),
        "a UAS answers the OPTIONS normally"
    );
    // regaut01: an authenticating registrar challenges an unknown scheme with Digest.
    let r = get("regaut01.dat");
    let server = DigestServer::new("example.com", Algorithm::Md5, 300);
    let verdict = server.verify(
        header_text(&r, "Authorization").as_deref(),
        "REGISTER",
        &r.uri.to_string(),
        0,
        |_| None,
    );
    assert!(matches!(verdict, AuthVerdict::Challenge(_)), "{verdict:?}");
    // cparam01: 'unknownparam' is a contact-param, not part of the binding URI.
    let contact = |r: &Request| header_text(r, "Contact").expect("Contact");
    let c = contact(&get("cparam01.dat"));
    let n = parse_name_addr(&c).expect("contact");
    assert_eq!(n.uri, "sip:+19725552222@gw1.example.net");
    assert_eq!(n.params, ";unknownparam");
    // cparam02: inside <>, it stays a URI parameter.
    let c = contact(&get("cparam02.dat"));
    assert_eq!(
        parse_name_addr(&c).expect("contact").uri,
        "sip:+19725552222@gw1.example.net;unknownparam"
    );
    // regescrt: the escaped Route header stays in the binding URI.
    let c = contact(&get("regescrt.dat"));
    assert_eq!(
        parse_name_addr(&c).expect("contact").uri,
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    );
}

#[test]
fn rfc5118_every_file_gets_its_verdict() {
    for (file, verdict) in manifest("rfc5118/MANIFEST.tsv") {
        let bytes = read(&format!("rfc5118/wire-crlf-cl-fixed/{file}"));
        let result = parse_datagram(&bytes);
        if verdict == "invalid" {
            assert_eq!(outcome(&result), Outcome::Reply(400), "{file}: {result:?}");
            continue;
        }
        assert_eq!(
            outcome(&result),
            Outcome::AcceptRequest,
            "{file} ({verdict}): {result:?}"
        );
        let r = request(result);
        let ids = MessageIds::of(&r);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let header = |name: &str| {
            text.lines()
                .find(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .map(|l| {
                    l.split_once(':')
                        .map(|(_, v)| v.trim().to_owned())
                        .unwrap_or_default()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            ids.call_id.map(|c| c.as_str().to_owned()),
            Some(header("Call-ID")),
            "{file}"
        );
        let cseq = header("CSeq");
        let (n, m) = cseq.split_once(' ').expect("cseq");
        assert_eq!(ids.cseq, Some((n.parse().expect("n"), m.into())), "{file}");
        assert!(ids.from_tag.is_some() && ids.branch.is_some(), "{file}");
    }
    let get = |f: &str| {
        request(parse_datagram(&read(&format!(
            "rfc5118/wire-crlf-cl-fixed/{f}"
        ))))
    };
    // 4.3: [2001:db8::10:5070] is all host, no port (erratum 1311).
    let r = get("port-ambiguous");
    assert_eq!(r.uri.host_with_port.port, None);
    assert_eq!(r.uri.host().to_string(), "[2001:db8::10:5070]");
    // 4.4: port 5070 outside the brackets.
    let r = get("port-unambiguous");
    assert_eq!(
        r.uri.host_with_port.port.map(|p| p.to_string()),
        Some("5070".into())
    );
    // 4.10: both the buggy three-colon and the correct form are tolerated.
    let bad = get("ipv6-bug-abnf-3-colons");
    let good = get("ipv6-correct-abnf-2-colons");
    assert_eq!(bad.uri.host(), good.uri.host());
    // 4.6/4.8: IPv6 media addresses in SDP parse.
    for f in ["ipv6-in-sdp", "mult-ip-in-sdp", "ipv4-mapped-ipv6"] {
        floorwire::sdp::parse(&get(f).body).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // The raw wire copy of ipv6-in-sdp declares more body than it carries: 400.
    let raw = parse_datagram(&read("rfc5118/wire-crlf/ipv6-in-sdp"));
    assert_eq!(outcome(&raw), Outcome::Reply(400));
}

#[test]
fn sip_misc_and_fuzz_seeds_never_panic() {
    for dir in [
        "sip-misc",
        "fuzz-seeds/pjproject/fuzz-sip",
        "fuzz-seeds/pjproject/fuzz-sip-dialog",
        "protos",
    ] {
        let mut seen = 0;
        for (_, bytes) in corpus_files(dir) {
            let _ = parse_datagram(&bytes);
            seen += 1;
        }
        assert!(seen > 0, "{dir} is empty");
    }
}

/// Every file under corpus folder `dir`, with its bytes, read one at a time.
fn corpus_files(dir: &str) -> impl Iterator<Item = (PathBuf, Vec<u8>)> {
    let mut stack = vec![corpus(dir)];
    std::iter::from_fn(move || {
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(
                    std::fs::read_dir(&p)
                        .expect("dir")
                        .map(|e| e.expect("entry").path()),
                );
            } else if let Ok(bytes) = std::fs::read(&p) {
                return Some((p, bytes));
            }
        }
        None
    })
}

/// The identifiers the ingress checks read on the way (the core uses them instead of
/// reading the headers again) are those `MessageIds::of` reads, for every message of
/// every corpus that parses.
#[test]
fn identifiers_read_while_checking_are_those_read_afterwards() {
    let mut compared = 0;
    for dir in [
        "rfc4475",
        "rfc5118",
        "sip-misc",
        "fuzz-seeds/pjproject/fuzz-sip",
        "fuzz-seeds/pjproject/fuzz-sip-dialog",
        "protos",
    ] {
        for (p, bytes) in corpus_files(dir) {
            let read_after = match parse_datagram_with_ids(&bytes) {
                Ok((Inbound::Request(r), ids)) => (ids, MessageIds::of(&r)),
                Ok((Inbound::Response(r), ids)) => (ids, MessageIds::of(&r)),
                _ => continue,
            };
            assert_eq!(read_after.0, read_after.1, "{}", p.display());
            compared += 1;
        }
    }
    assert!(compared > 50, "only {compared} messages parsed");
}

/// Over a stream (TCP), framing is by Content-Length: `clerr` waits for octets that
/// never come, `ncl` and `mcl01` lose framing and the connection is closed. Driven
/// through a real loopback TCP connection.
#[test]
fn rfc4475_stream_framing_over_tcp() {
    use floorwire::sip::framing::{FramingError, StreamFramer};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn serve_one(bytes: Vec<u8>) -> (Vec<Vec<u8>>, Option<FramingError>, usize) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("addr");
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            let (a, b) = bytes.split_at(bytes.len() / 2);
            s.write_all(a).expect("write");
            s.flush().expect("flush");
            s.write_all(b).expect("write");
            s
        });
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut framer = StreamFramer::new();
        let mut messages = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => framer.push(&buf[..n]),
                // Read timeout: the driver would now close the idle connection.
                Err(_) => break,
            }
            loop {
                match framer.next_message() {
                    Ok(Some(m)) => messages.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        drop(client.join());
                        return (messages, Some(e), framer.pending());
                    }
                }
            }
        }
        drop(client.join());
        (messages, None, framer.pending())
    }

    let (messages, error, pending) = serve_one(read("rfc4475/clerr.dat"));
    assert!(
        messages.is_empty() && error.is_none() && pending > 0,
        "clerr: still waiting"
    );
    let (_, error, _) = serve_one(read("rfc4475/ncl.dat"));
    assert!(
        matches!(error, Some(FramingError::BadContentLength(_))),
        "ncl: {error:?}"
    );
    let (_, error, _) = serve_one(read("rfc4475/mcl01.dat"));
    assert!(
        matches!(error, Some(FramingError::BadContentLength(_))),
        "mcl01: {error:?}"
    );
    // A good message, folded headers and all, framed over the same path.
    let wsinv = read("rfc4475/wsinv.dat");
    let (messages, error, pending) = serve_one(wsinv.clone());
    assert!(error.is_none(), "{error:?}");
    assert_eq!((messages, pending), (vec![wsinv], 0));
    // dblreq over a stream: the REGISTER, then the INVITE (Content-Length 150), then
    // the 5 octets its Content-Length leaves over ("C\r\n\r\n"), which frame as a
    // header section without Content-Length: framing is lost, the connection closed.
    let (messages, error, _) = serve_one(read("rfc4475/dblreq.dat"));
    assert_eq!(messages.len(), 2);
    assert!(messages[0].starts_with(b"REGISTER sip:example.com"));
    assert!(messages[1].starts_with(b"INVITE sip:joe@example.com"));
    assert_eq!(error, Some(FramingError::MissingContentLength));
}
