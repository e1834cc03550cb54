//! FTPES provisioning through the real `tss` binary: curl and lftp download the profile
//! (with freshly minted SIP credentials whose HA1 the TPOs get) and software; plain FTP
//! and wrong passwords are refused; `PROT C` + `EPSV` (libunftp's own hole) and active
//! mode are refused; every path of ../shared/corpora/ftps/path-traversal.txt stays in
//! the home.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../tests-common/service.rs"]
mod service;

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const TSS: &str = env!("CARGO_BIN_EXE_tss");
const FIRMWARE: &[u8] = b"FW42";

struct Lab {
    tss: service::Service,
    ftpes: SocketAddr,
    api: SocketAddr,
    ca: std::path::PathBuf,
    _dir: common::TempDir,
}

fn start() -> Lab {
    let dir = common::TempDir::new("ftpes");
    let pki = common::slapd::pki(&dir.0, "ftpes");
    let software = dir.0.join("software");
    std::fs::create_dir_all(&software).unwrap();
    std::fs::write(software.join("turret-fw-4.2.0.bin"), FIRMWARE).unwrap();
    std::fs::write(dir.0.join("secret.txt"), "outside the home").unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("tss.sqlite3").display());
    // Each lab of this process gets its own ten passive ports (the tests run in
    // parallel), below Linux's ephemeral range (32768-60999), where a client socket of
    // some other test could hold a port and make the gate answer 425.
    static LABS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let lab = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
    let first = 20000 + (std::process::id() % 300) as u16 * 40 + lab * 10;
    let (first, last) = (first.to_string(), (first + 9).to_string());
    let (cert, key, sw) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
        software.display().to_string(),
    );
    let env = [
        ("TSS__STORE__URL", url.as_str()),
        ("TSS__ADMIN__LISTEN", "127.0.0.1:0"),
        ("TSS__API__LISTEN", "127.0.0.1:0"),
        ("TSS__FTPES__LISTEN", "127.0.0.1:0"),
        ("TSS__FTPES__PASSIVE_PORT_FIRST", first.as_str()),
        ("TSS__FTPES__PASSIVE_PORT_LAST", last.as_str()),
        ("TSS__FTPES__CERT_FILE", cert.as_str()),
        ("TSS__API__CERT_FILE", cert.as_str()),
        ("TSS__API__KEY_FILE", key.as_str()),
        ("TSS__FTPES__KEY_FILE", key.as_str()),
        ("TSS__FTPES__SOFTWARE_DIR", sw.as_str()),
        ("TSS__FTPES__LOGIN_TIMEOUT_SECS", "2"),
    ];
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/floor.json");
    let out = Command::new(TSS)
        .args(["seed", fixture])
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tss = service::start(TSS, &env);
    let ftpes = service::ready_endpoint(&tss.ready, "ftpes").expect("ftpes= in the ready line");
    let api = service::ready_endpoint(&tss.ready, "api").unwrap();
    Lab {
        tss,
        ftpes,
        api,
        ca: pki.ca,
        _dir: dir,
    }
}

fn curl(lab: &Lab, path: &str, user: &str, extra: &[&str]) -> (i32, Vec<u8>) {
    let t = std::time::Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&lab.ca)
        .args(["-u", user])
        .args(extra)
        .arg(format!("ftp://{}/{path}", lab.ftpes))
        .output()
        .expect("curl");
    eprintln!("curl {path} {extra:?}: {:?}", t.elapsed());
    (out.status.code().unwrap_or(-1), out.stdout)
}

#[test]
fn curl_and_lftp_download_profile_and_software() {
    let lab = start();
    // curl: explicit TLS required for everything.
    let (code, body) = curl(&lab, "profile.json", "trader01:t01-pass", &["--ssl-reqd"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&body));
    let profile: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(profile["schema"], "floorwire.profile/1");
    assert_eq!(profile["user"]["name"], "trader01");
    assert_eq!(profile["lines"][0]["id"], "PW-GS");
    assert_eq!(profile["tpos"][0], "127.0.1.21:5060");
    let sip = &profile["sip"][0];
    assert_eq!(sip["device_id"], "T-0001");
    let (username, password) = (
        sip["username"].as_str().unwrap(),
        sip["password"].as_str().unwrap(),
    );

    // The TPOs get the HA1 of exactly that credential (over HTTPS, certificate checked).
    let out = Command::new("curl")
        .args(["-sS", "-u", "admin:admin-pass", "--cacert"])
        .arg(&lab.ca)
        .arg(format!("https://{}/api/tpo/config", lab.api))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-u", "admin:admin-pass"])
        .arg(format!("http://{}/api/tpo/config", lab.api))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("devices"),
        "no API in clear"
    );
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let device = config["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["username"] == username)
        .unwrap();
    assert_eq!(
        device["ha1_md5"].as_str().unwrap(),
        floorwire::sip::auth::ha1(
            floorwire::sip::auth::Algorithm::Md5,
            username,
            "floorwire",
            password
        )
    );

    // A turret on its own address (as in the lab) downloads the profile for its device
    // only: data connections come from the turret's address, not the gate's.
    let (code, body) = curl(
        &lab,
        "T-0001.json",
        "trader01:t01-pass",
        &["--ssl-reqd", "--interface", "127.0.10.5"],
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&body));
    let device: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(device["sip"].as_array().unwrap().len(), 1);
    assert_ne!(
        device["sip"][0]["password"], password,
        "a new credential replaces the old"
    );
    let (code, _) = curl(
        &lab,
        "T-0002.json",
        "trader01:t01-pass",
        &["--ssl-reqd", "--interface", "127.0.10.5"],
    );
    assert_ne!(code, 0, "another user's turret");
    // The same through PASV (curl --disable-epsv), from yet another address.
    let (code, body) = curl(
        &lab,
        "profile.json",
        "trader01:t01-pass",
        &["--ssl-reqd", "--disable-epsv", "--interface", "127.0.10.6"],
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&body));

    let (code, listing) = curl(&lab, "", "trader01:t01-pass", &["--ssl-reqd"]);
    assert_eq!(code, 0);
    let listing = String::from_utf8_lossy(&listing);
    assert!(
        listing.contains("profile.json") && listing.contains("software"),
        "{listing}"
    );
    let (code, fw) = curl(
        &lab,
        "software/turret-fw-4.2.0.bin",
        "trader01:t01-pass",
        &["--ssl-reqd"],
    );
    assert_eq!((code, fw.as_slice()), (0, FIRMWARE));
    // trader02's turret runs no package: nothing to download.
    let (code, _) = curl(
        &lab,
        "software/turret-fw-4.2.0.bin",
        "trader02:t02-pass",
        &["--ssl-reqd"],
    );
    assert_ne!(code, 0);

    // Wrong password: 530 (curl 67); plain FTP: USER refused before TLS.
    let (code, _) = curl(&lab, "profile.json", "trader01:wrong", &["--ssl-reqd"]);
    assert_eq!(code, 67);
    let (code, _) = curl(&lab, "profile.json", "trader01:t01-pass", &[]);
    assert_ne!(code, 0, "plain-text login must fail");
    // TLS on the control channel only, data in clear: refused.
    let (code, _) = curl(
        &lab,
        "profile.json",
        "trader01:t01-pass",
        &["--ftp-ssl-control"],
    );
    assert_ne!(code, 0, "clear data channel must fail");
    // Active mode: refused.
    let (code, _) = curl(
        &lab,
        "profile.json",
        "trader01:t01-pass",
        &["--ssl-reqd", "-P", "127.0.0.1"],
    );
    assert_ne!(code, 0, "active mode must fail");

    // FTPES logins are counted with the API's.
    let metrics = service::http_get(lab.tss.admin, "/metrics").1;
    assert!(
        metrics.contains("floorwire_tss_logins_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("floorwire_tss_logins_total{result=\"ok\"}"),
        "{metrics}"
    );

    // lftp, forcing TLS and checking the certificate.
    if Path::new("/usr/bin/lftp").exists() {
        let script = format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:ca-file {}; set ftp:passive-mode true; \
             open -u trader01,t01-pass ftp://{}; cat profile.json",
            lab.ca.display(),
            lab.ftpes
        );
        let out = Command::new("lftp").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "lftp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let profile: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(profile["user"]["name"], "trader01");
    } else {
        assert!(!common::in_ci(), "lftp is required under CI=true");
        eprintln!("SKIPPED lftp: not installed");
    }
    assert!(service::terminate(lab.tss).success());
}

/// A raw FTPES control connection.
struct Control {
    stream: BufReader<TlsStream<TcpStream>>,
    tls: tokio_rustls::TlsConnector,
}

fn client_config(ca: &Path) -> rustls::ClientConfig {
    floorwire::service::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(client_config(ca)))
}

#[test]
fn suppaftp_downloads_in_both_passive_modes() {
    use suppaftp::{Mode, RustlsConnector, RustlsFtpStream, types::FileType};
    let lab = start();
    let tls = Arc::new(client_config(&lab.ca));
    let secure = |addr: SocketAddr| {
        RustlsFtpStream::connect(addr)
            .unwrap()
            .into_secure(RustlsConnector::from(tls.clone()), "127.0.0.1")
            .unwrap()
    };
    let mut ftp = secure(lab.ftpes);
    ftp.login("trader01", "t01-pass").unwrap();
    ftp.transfer_type(FileType::Binary).unwrap();
    for mode in [Mode::ExtendedPassive, Mode::Passive] {
        ftp.set_mode(mode);
        let profile: Value =
            serde_json::from_slice(ftp.retr_as_buffer("profile.json").unwrap().get_ref()).unwrap();
        assert_eq!(profile["user"]["name"], "trader01", "{mode:?}");
        let fw = ftp
            .retr_as_buffer("software/turret-fw-4.2.0.bin")
            .unwrap()
            .into_inner();
        assert_eq!(fw, FIRMWARE, "{mode:?}");
    }
    let names = ftp.nlst(None).unwrap();
    assert!(
        names.iter().any(|n| n.ends_with("profile.json")),
        "{names:?}"
    );
    assert!(
        ftp.put_file("evil.txt", &mut std::io::Cursor::new(b"x".to_vec()))
            .is_err(),
        "read-only"
    );
    ftp.quit().unwrap();

    let mut wrong = secure(lab.ftpes);
    let e = wrong.login("trader01", "nope").unwrap_err();
    assert!(e.to_string().contains("530"), "{e}");
    assert!(service::terminate(lab.tss).success());
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> (u16, String) {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).await.unwrap() > 0,
            "server closed; so far: {all}"
        );
        all.push_str(&line);
        let b = line.as_bytes();
        if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
            return (line[..3].parse().unwrap(), all);
        }
    }
}

impl Control {
    async fn open(addr: SocketAddr, ca: &Path) -> Control {
        let mut tcp = BufReader::new(TcpStream::connect(addr).await.unwrap());
        assert_eq!(read_reply(&mut tcp).await.0, 220);
        tcp.get_mut().write_all(b"USER trader01\r\n").await.unwrap();
        let (code, _) = read_reply(&mut tcp).await;
        assert_eq!(code, 530, "USER in clear is refused");
        tcp.get_mut().write_all(b"AUTH TLS\r\n").await.unwrap();
        assert_eq!(read_reply(&mut tcp).await.0, 234);
        let tls = connector(ca);
        let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
        let stream = tls.connect(name, tcp.into_inner()).await.unwrap();
        Control {
            stream: BufReader::new(stream),
            tls,
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.stream.get_mut().flush().await.unwrap();
        let r = read_reply(&mut self.stream).await;
        eprintln!(
            "> {} < {}",
            line.chars().take(60).collect::<String>(),
            r.1.trim_end()
        );
        r
    }

    /// Sends NOOP and skips replies up to its 200.
    async fn sync(&mut self) {
        self.stream.get_mut().write_all(b"NOOP\r\n").await.unwrap();
        self.stream.get_mut().flush().await.unwrap();
        loop {
            let (code, text) = read_reply(&mut self.stream).await;
            if code == 200 && text.to_ascii_lowercase().contains("noop")
                || text.starts_with("200 Successfully did nothing")
            {
                return;
            }
            if code == 200 {
                return;
            }
        }
    }

    /// Opens an EPSV data channel under TLS, sends `line`, returns (final code, data).
    async fn transfer(&mut self, line: &str) -> (u16, Vec<u8>) {
        let (code, text) = self.cmd("EPSV").await;
        assert_eq!(code, 229, "{text}");
        let port: u16 = text.split('|').nth(3).unwrap().parse().unwrap();
        let addr = SocketAddr::new(
            self.stream.get_ref().get_ref().0.peer_addr().unwrap().ip(),
            port,
        );
        let data = TcpStream::connect(addr).await.unwrap();
        // The data channel's TLS handshake runs while the command is answered.
        let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
        let tls = self.tls.clone();
        let handshake = tokio::spawn(async move { tls.connect(name, data).await });
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.stream.get_mut().flush().await.unwrap();
        let (code, text) = read_reply(&mut self.stream).await;
        if code >= 400 {
            // Let the refused data channel finish either way, then skip any late reply
            // about it (a 425) so the next command reads its own answer.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await;
            self.sync().await;
            return (code, text.into_bytes());
        }
        let mut data = tokio::time::timeout(std::time::Duration::from_secs(10), handshake)
            .await
            .expect("data channel handshake in time")
            .unwrap()
            .expect("data channel under TLS");
        let mut bytes = Vec::new();
        let _ = data.read_to_end(&mut bytes).await;
        let (code, _) = read_reply(&mut self.stream).await;
        (code, bytes)
    }
}

/// Whether an argument names the home itself or an entry in it (`.`, `/`, `//`…).
fn inside_home(arg: &str) -> bool {
    let parts: Vec<&str> = arg
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    matches!(parts.as_slice(), [] | ["software"] | ["profile.json"])
}

fn decode(repr: &str) -> String {
    let inner = &repr[1..repr.len() - 1];
    inner.replace("\\\\", "\\")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prot_p_before_any_data_channel_and_no_way_out_of_the_home() {
    let lab = tokio::task::spawn_blocking(start).await.unwrap();
    let mut c = Control::open(lab.ftpes, &lab.ca).await;
    assert_eq!(c.cmd("PASS t01-pass").await.0, 503, "PASS before USER");
    assert_eq!(c.cmd("USER trader01").await.0, 331);
    assert_eq!(c.cmd("PASS t01-pass").await.0, 230);

    // libunftp alone lets PROT C + EPSV through in clear: the gate does not.
    assert_eq!(c.cmd("PROT C").await.0, 534);
    assert_eq!(c.cmd("EPSV").await.0, 521);
    assert_eq!(c.cmd("PASV").await.0, 521);
    assert_eq!(c.cmd("RETR profile.json").await.0, 521);
    assert_eq!(c.cmd("PORT 127,0,0,1,200,10").await.0, 502);
    assert_eq!(c.cmd("EPRT |1|127.0.0.1|51210|").await.0, 502);
    assert_eq!(c.cmd("CCC").await.0, 534);
    assert_eq!(c.cmd("PBSZ 0").await.0, 200);
    assert_eq!(c.cmd("PROT P").await.0, 200);
    // A second EPSV closes the port the first one opened: one waiting port a session.
    let port_of = |text: &str| -> u16 { text.split('|').nth(3).unwrap().parse().unwrap() };
    let (_, first) = c.cmd("EPSV").await;
    let (_, second) = c.cmd("EPSV").await;
    assert_ne!(port_of(&first), port_of(&second));
    // The port closes as the aborted wait is dropped: ask until it refuses.
    let stale = SocketAddr::new(lab.ftpes.ip(), port_of(&first));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    let mut tries = 0;
    while TcpStream::connect(stale).await.is_ok() {
        tries += 1;
        assert!(tries < 500, "the unused port was closed");
        tick.tick().await;
    }
    let (code, profile) = c.transfer("RETR profile.json").await;
    assert_eq!(code, 226);
    assert!(String::from_utf8_lossy(&profile).contains("\"trader01\""));

    // Every traversal argument stays in the home: nothing outside is listed or read,
    // nothing is written, and the working directory never leaves it.
    let home = [
        "profile.json",
        "software",
        "turret-fw-4.2.0.bin",
        "T-0001.json",
    ];
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpora/ftps/path-traversal.txt"
    ))
    .expect("../shared/corpora/ftps/path-traversal.txt");
    let mut tried = 0;
    for line in corpus.lines().filter(|l| l.starts_with('\'')) {
        let arg = decode(line);
        tried += 1;
        let (code, data) = c.transfer(&format!("RETR {arg}")).await;
        assert!(
            code >= 500,
            "RETR {arg:?} answered {code}: {}",
            String::from_utf8_lossy(&data)
        );
        let (code, data) = c.transfer(&format!("LIST {arg}")).await;
        if code == 226 {
            let text = String::from_utf8_lossy(&data);
            for entry in text.lines() {
                let name = entry.rsplit(' ').next().unwrap_or_default();
                assert!(home.contains(&name), "LIST {arg:?} showed {entry:?}");
            }
        }
        for verb in ["STOR", "DELE", "MKD", "RMD", "RNFR", "SIZE", "MDTM"] {
            let (code, text) = c.cmd(&format!("{verb} {arg}")).await;
            if matches!(verb, "SIZE" | "MDTM") && inside_home(&arg) {
                continue;
            }
            assert!(code >= 500, "{verb} {arg:?} answered {code}: {text}");
        }
        c.cmd(&format!("CWD {arg}")).await;
        let (_, pwd) = c.cmd("PWD").await;
        let cwd = pwd.split('"').nth(1).unwrap_or_default();
        assert!(
            inside_home(cwd) && cwd != "profile.json",
            "CWD {arg:?} left the home: {pwd}"
        );
        let (code, _) = c.cmd("CWD /").await;
        assert_eq!(code, 250);
    }
    assert!(tried >= 40, "corpus read: {tried}");

    // A connection that never logs in is closed at the login deadline (2 s here),
    // however busy it keeps the line with NOOPs.
    let mut idle = BufReader::new(TcpStream::connect(lab.ftpes).await.unwrap());
    assert_eq!(read_reply(&mut idle).await.0, 220);
    let started = std::time::Instant::now();
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(300));
    let closed_with = loop {
        pace.tick().await;
        idle.get_mut().write_all(b"NOOP\r\n").await.unwrap();
        let (code, _) = read_reply(&mut idle).await;
        if code != 200 {
            break code;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never closed"
        );
    };
    assert_eq!(closed_with, 421);
    assert_eq!(c.cmd("QUIT").await.0, 221);
    assert!(
        tokio::task::spawn_blocking(move || service::terminate(lab.tss))
            .await
            .unwrap()
            .success()
    );
}
