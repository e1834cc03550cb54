//! Digest authentication, client side, against a real server: SIPp plays a registrar
//! that challenges with 401 and checks our Authorization with `verifyauth`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floorwire::sip::auth::{Challenge, Credentials};
use floorwire::sip::ingress::{Inbound, parse_datagram};
use floorwire::sip::msg::{Header, Request};
use floorwire::sip::transaction::{Event, LayerConfig, TransactionLayer};
use floorwire::sip::uas::header_text;
use floorwire::sip::{Branch, MessageIds};

struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn register(me: SocketAddr, server: SocketAddr, cseq: u32, authorization: Option<&str>) -> Request {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={}\r\nMax-Forwards: 70\r\n\
From: <sip:dev1@{server}>;tag=fw1\r\nTo: <sip:dev1@{server}>\r\nCall-ID: digest-client@{me}\r\n\
CSeq: {cseq} REGISTER\r\nContact: <sip:dev1@{me}>\r\n{auth}Expires: 300\r\nContent-Length: 0\r\n\r\n",
        Branch::generate()
    );
    match parse_datagram(text.as_bytes()) {
        Ok(Inbound::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// Sends `request` through a transaction and returns its final response.
fn transact(
    layer: &mut TransactionLayer,
    socket: &UdpSocket,
    server: SocketAddr,
    request: Request,
) -> floorwire::sip::msg::Response {
    let start = Instant::now();
    layer.send_request(start, server, request).expect("send");
    let mut buf = [0u8; 65_536];
    loop {
        while let Some(t) = layer.poll_transmit() {
            socket.send_to(&t.bytes, t.destination).expect("send_to");
        }
        while let Some(e) = layer.poll_event() {
            match e {
                Event::Response { response, .. } if response.status_code.code() >= 200 => {
                    return response;
                }
                Event::Timeout { .. } => panic!("no final response"),
                _ => {}
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "bounded wait");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => layer.handle_datagram(Instant::now(), from, &buf[..len]),
            Err(_) => layer.handle_timeout(Instant::now()),
        }
    }
}

fn run(password: &str) -> (u16, u16) {
    let port = common::free_udp_port();
    let dir = common::scratch("sipp-registrar");
    let _sipp = Sipp(
        Command::new("sipp")
            .args(["-sf", &common::scenario("uas-register-challenge.xml")])
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "30s",
            ])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sipp"),
    );
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = socket.local_addr().expect("addr");
    let mut layer = TransactionLayer::new(LayerConfig::default());
    // SIPp may not be listening yet: the first REGISTER is retransmitted by Timer E.
    let challenge = transact(&mut layer, &socket, server, register(me, server, 1, None));
    let www = header_text(&challenge, "WWW-Authenticate").expect("challenge header");
    let parsed = Challenge::parse(&www).expect("parse challenge");
    let credentials = Credentials::answer(
        &parsed,
        "dev1",
        password,
        "REGISTER",
        &format!("sip:{server}"),
        "0a4f113b",
        1,
    );
    let answer = transact(
        &mut layer,
        &socket,
        server,
        register(me, server, 2, Some(&credentials.to_header_value())),
    );
    let _ = std::fs::remove_dir_all(dir);
    assert!(MessageIds::of(&answer).to_tag.is_some());
    assert!(
        answer
            .headers
            .iter()
            .any(|h| matches!(h, Header::CallId(_)))
    );
    (challenge.status_code.code(), answer.status_code.code())
}

#[test]
fn our_credentials_satisfy_sipp_verifyauth() {
    if !common::sipp_available() {
        return;
    }
    assert_eq!(run("s3cret"), (401, 200));
}

#[test]
fn wrong_password_fails_sipp_verifyauth() {
    if !common::sipp_available() {
        return;
    }
    assert_eq!(run("wrong"), (401, 403));
}
