//! Digest authentication against a real client: SIPp's `[authentication]` answers our
//! registrar's 401 challenge (MD5, qop=auth). Right password → 200, wrong → 403.

mod common;

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use floorwire::sip::Tag;
use floorwire::sip::auth::{Algorithm, AuthVerdict, DigestServer, ha1};
use floorwire::sip::msg::{Header, Method};
use floorwire::sip::reply::{response_to, with_header};
use floorwire::sip::transaction::{Event, TransactionLayer};
use floorwire::sip::uas::header_text;
use floorwire::sip::udp::{TransactionUser, UdpConfig, run_udp};
use tokio_util::sync::CancellationToken;

/// A registrar that only authenticates: 401 with a challenge, then 200 or 403.
struct Registrar {
    digest: DigestServer,
    stored_ha1: String,
    verdicts: tokio::sync::mpsc::UnboundedSender<&'static str>,
}

impl TransactionUser for Registrar {
    fn on_event(&mut self, now: Instant, event: Event, layer: &mut TransactionLayer) {
        let Event::Request { id, request, .. } = event else {
            return;
        };
        if request.method != Method::Register {
            let _ = layer.respond(now, id, response_to(&request, 405, Some(&Tag::generate())));
            return;
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let authorization = header_text(&request, "Authorization");
        let verdict = self.digest.verify(
            authorization.as_deref(),
            "REGISTER",
            &request.uri.to_string(),
            unix,
            |user| (user == "dev1").then(|| self.stored_ha1.clone()),
        );
        let tag = Tag::generate();
        let response = match verdict {
            AuthVerdict::Authenticated { .. } => {
                let _ = self.verdicts.send("authenticated");
                response_to(&request, 200, Some(&tag))
            }
            AuthVerdict::Challenge(challenge) => with_header(
                response_to(&request, 401, Some(&tag)),
                Header::WwwAuthenticate(challenge.to_header_value().into()),
            ),
            AuthVerdict::Forbidden => {
                let _ = self.verdicts.send("forbidden");
                response_to(&request, 403, Some(&tag))
            }
        };
        let _ = layer.respond(now, id, response);
    }
}

async fn register_with(
    password: &str,
    scenario: &str,
) -> (std::process::Output, Vec<&'static str>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let registrar_addr: SocketAddr = socket.local_addr().expect("addr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let registrar = Registrar {
        digest: DigestServer::new("floorwire.test", Algorithm::Md5, 300),
        stored_ha1: ha1(Algorithm::Md5, "dev1", "floorwire.test", "s3cret"),
        verdicts: tx,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run_udp(
        socket,
        UdpConfig::default(),
        registrar,
        shutdown.clone(),
    ));
    let dir = common::scratch("sipp-digest");
    let args: Vec<String> = [
        registrar_addr.to_string().as_str(),
        "-sf",
        &common::scenario(scenario),
        "-s",
        "dev1",
        "-au",
        "dev1",
        "-ap",
        password,
        "-i",
        "127.0.0.1",
        "-p",
        &common::free_udp_port().to_string(),
        "-m",
        "5",
        "-r",
        "5",
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run_dir = dir.clone();
    let output = tokio::task::spawn_blocking(move || common::run_sipp(&args, &run_dir))
        .await
        .expect("join");
    shutdown.cancel();
    server.await.expect("join").expect("server");
    let mut verdicts = Vec::new();
    while let Ok(v) = rx.try_recv() {
        verdicts.push(v);
    }
    let _ = std::fs::remove_dir_all(dir);
    (output, verdicts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_answers_our_challenge() {
    if !common::sipp_available() {
        return;
    }
    let (output, verdicts) = register_with("s3cret", "uac-register-digest.xml").await;
    assert!(output.status.success(), "{}", common::tail(&output));
    assert_eq!(verdicts, vec!["authenticated"; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_403() {
    if !common::sipp_available() {
        return;
    }
    let (output, verdicts) =
        register_with("not-the-password", "uac-register-digest-refused.xml").await;
    assert!(output.status.success(), "{}", common::tail(&output));
    assert_eq!(verdicts, vec!["forbidden"; 5]);
}
