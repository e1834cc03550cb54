//! One lab service as a child process: started with its environment overrides, its
//! output kept in `DIR/logs/NAME.log`, ready once it prints its ready line, stopped
//! with SIGTERM (then SIGKILL after a grace period).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::Error;

/// How to start one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Lab name (`tss-1`, `tpo-1a`…).
    pub name: String,
    /// The program and its arguments.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment overrides (`TPO__SIP__LISTEN`…).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub dir: PathBuf,
    /// Log file (stdout and stderr).
    pub log: PathBuf,
    /// How to tell it is ready.
    pub ready: Readiness,
}

/// How a started service shows it is ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// Floorwire services print `NAME ready: admin=ADDR …` on stdout.
    ReadyLine,
    /// Others (slapd) accept TCP connections on this endpoint, named thus in lab.json.
    Listening(&'static str, std::net::SocketAddr),
}

/// A started service.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Its ready line (`tpo ready: admin=… sip=…`).
    pub ready: String,
}

/// Longest wait for a ready line.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Grace period between SIGTERM and SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(10);

impl ServiceSpec {
    /// Starts the service and waits for its ready line (`… ready: admin=…`).
    pub async fn start(&self) -> Result<Running, Error> {
        let fail = |what: String| Error::Lab(format!("{}: {what}", self.name));
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .await
            .map_err(|e| fail(format!("log {}: {e}", self.log.display())))?;
        log.write_all(format!("--- lab starts {}\n", self.name).as_bytes())
            .await?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG_STYLE")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", self.program.display())))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<String>(1024);
        if let Some(stdout) = child.stdout.take() {
            let tx = lines_tx.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(" ready: admin=")
                        && let Some(r) = ready_tx.take()
                    {
                        let _ = r.send(line.clone());
                    }
                    let _ = tx.send(line).await;
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let tx = lines_tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let _ = tx.send(line).await;
                }
            });
        }
        drop(lines_tx);
        tokio::spawn(async move {
            while let Some(line) = lines_rx.recv().await {
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
            }
            let _ = log.flush().await;
        });
        if let Readiness::Listening(endpoint, addr) = self.ready {
            return self.wait_listening(child, endpoint, addr).await;
        }
        let ready = match tokio::time::timeout(READY_WITHIN, ready_rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                let status = child.wait().await.ok();
                return Err(fail(format!(
                    "exited before it was ready ({}); see {}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    self.log.display()
                )));
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(fail(format!(
                    "not ready within {} s; see {}",
                    READY_WITHIN.as_secs(),
                    self.log.display()
                )));
            }
        };
        Ok(Running { child, ready })
    }
}

impl ServiceSpec {
    /// Waits until `addr` accepts a TCP connection (or the process exits, or
    /// [`READY_WITHIN`] passes).
    async fn wait_listening(
        &self,
        mut child: Child,
        endpoint: &str,
        addr: std::net::SocketAddr,
    ) -> Result<Running, Error> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Running {
                    child,
                    ready: format!("{} ready: {endpoint}={addr}", self.name),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Lab(format!(
                    "{}: exited before it was ready ({status}); see {}",
                    self.name,
                    self.log.display()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(Error::Lab(format!(
                    "{}: not listening on {addr} within {} s; see {}",
                    self.name,
                    READY_WITHIN.as_secs(),
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Running {
    /// The address after `NAME=` in the ready line.
    pub fn endpoint(&self, name: &str) -> Option<std::net::SocketAddr> {
        let key = format!("{name}=");
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&key))
            .and_then(|a| a.parse().ok())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited (on its own or killed).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) -> Option<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            // The standard `kill` command: the crate forbids unsafe code (no libc::kill).
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(STOP_WITHIN, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                self.child.wait().await.ok()
            }
        }
    }

    /// SIGKILL at once (a crash, for fault scenarios).
    pub async fn kill(mut self) -> Option<std::process::ExitStatus> {
        let _ = self.child.kill().await;
        self.child.wait().await.ok()
    }
}
