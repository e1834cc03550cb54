//! Shared by each service crate's `tests/serve.rs` (included with `#[path]`): spawn the
//! real binary, wait for its machine-readable ready line, talk HTTP to its admin port,
//! stop it with SIGTERM.

#![allow(dead_code)] // each crate uses a subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running service binary; killed if the test ends (or panics) without stopping it.
pub struct Service {
    pub child: Child,
    pub admin: SocketAddr,
    /// The whole ready line (services may name more endpoints after `admin=`).
    pub ready: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `bin serve` with `env`, waiting (at most 60 s) for `NAME ready: admin=ADDR`.
pub fn start(bin: &str, env: &[(&str, &str)]) -> Service {
    start_with_args(bin, &["serve"], env)
}

/// Starts `bin ARGS...` with `env`, waiting (at most 60 s) for its ready line.
pub fn start_with_args(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn service");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready: admin=") {
                let _ = tx.send(line);
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{bin} printed no ready line within 60 s")
        });
    let admin = ready_endpoint(&ready, "admin").expect("admin address");
    Service {
        child,
        admin,
        ready,
    }
}

/// The address after `NAME=` in a ready line (`tss ready: admin=A api=B`).
pub fn ready_endpoint(ready: &str, name: &str) -> Option<SocketAddr> {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|a| a.parse().ok())
}

/// `GET path` over a plain TCP connection: (status code, headers+body text).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// The value of an unlabelled metric in a `/metrics` page (`None` if absent).
pub fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits (at most `within`) until `check` holds, polling every 20 ms.
pub fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP port free right now on `ip`.
pub fn free_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sends SIGTERM to process `pid`.
pub fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Waits (at most `within`) for `child` to exit, on a thread blocked in its `wait()`;
/// past that it is killed (SIGKILL) and the answer is `None`.
pub fn wait_exit(mut child: Child, within: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(Ok(status)) => Some(status),
        _ => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            None
        }
    }
}

/// Sends SIGTERM and waits (at most 20 s) for the exit.
pub fn terminate(mut service: Service) -> ExitStatus {
    let pid = service.child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(service.child.wait());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("service stops within 20 s of SIGTERM")
        .expect("wait")
}

/// Runs `bin serve --config FILE` on `toml` and returns (exit status, stderr).
pub fn run_with_config(bin: &str, toml: &str) -> (ExitStatus, String, String) {
    let path = std::env::temp_dir().join(format!(
        "floorwire-{}-{}.toml",
        std::process::id(),
        toml.len()
    ));
    std::fs::write(&path, toml).expect("write config");
    let out = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.display().to_string(),
    )
}

/// The checks every service binary passes.
pub fn check_service_binary(bin: &str, env_prefix: &str, extra_env: &[(&str, &str)]) {
    let key = format!("{env_prefix}__ADMIN__LISTEN");
    let mut env = vec![(key.as_str(), "127.0.0.1:0")];
    env.extend_from_slice(extra_env);
    let service = start(bin, &env);
    let (code, body) = http_get(service.admin, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(service.admin, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{body}"
    );
    let (code, _) = http_get(service.admin, "/nope");
    assert_eq!(code, 404);
    let status = terminate(service);
    assert!(status.success(), "graceful stop on SIGTERM: {status:?}");

    let (status, stderr, path) =
        run_with_config(bin, "[admin]\nlisten = \"127.0.0.1:0\"\nlisten_port = 9\n");
    assert!(!status.success());
    assert!(
        stderr.contains(&path) && stderr.contains("listen_port"),
        "error names file and key: {stderr}"
    );
}
