//! The real `turret-sim lab`: ready line, lab.json, a SIP OPTIONS answered by the
//! carrier stand-in, its metrics counting it, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn lab_starts_answers_and_stops() {
    let dir = std::env::temp_dir().join(format!("floorwire-lab-test-{}", std::process::id()));
    let mut lab = Command::new(env!("CARGO_BIN_EXE_turret-sim"))
        .args(["lab", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn lab");
    let stdout = lab.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = line.strip_prefix("lab ready: ") {
                let _ = tx.send(path.to_owned());
            }
        }
    });
    let path = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = lab.kill();
            panic!("no `lab ready:` line within 60 s (is 127.0.3.1:5060 free?)")
        });
    let lab_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("lab.json")).expect("json");
    let carrier = &lab_json["services"]["carrier"];
    assert_eq!(carrier["kind"], "carrier");
    let sip: SocketAddr = carrier["endpoints"]["sip"]
        .as_str()
        .expect("sip")
        .parse()
        .expect("addr");
    let admin: SocketAddr = carrier["endpoints"]["admin"]
        .as_str()
        .expect("admin")
        .parse()
        .expect("addr");
    assert_eq!(lab_json["carrier"]["sip"], carrier["endpoints"]["sip"]);

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = client.local_addr().expect("addr");
    let options = format!(
        "OPTIONS sip:carrier@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKlabtest\r\n\
Max-Forwards: 70\r\nFrom: <sip:test@{me}>;tag=t1\r\nTo: <sip:carrier@{sip}>\r\n\
Call-ID: labtest@{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    client.send_to(options.as_bytes(), sip).expect("send");
    let mut buf = [0u8; 4096];
    let (len, _) = client.recv_from(&mut buf).expect("an answer");
    assert!(
        buf[..len].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..len])
    );

    // The metrics were updated before the answer was sent.
    let metrics = get(admin, "/metrics");
    assert!(
        metrics.contains("floorwire_sip_requests_received_total 1"),
        "metrics did not count the request:\n{metrics}"
    );
    assert!(get(admin, "/healthz").starts_with("HTTP/1.1 200"));

    Command::new("kill")
        .args(["-TERM", &lab.id().to_string()])
        .status()
        .expect("kill");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lab.wait());
    });
    let status = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("lab stops within 20 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}
