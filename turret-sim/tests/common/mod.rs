//! The lab as the tests start it: the real `turret-sim lab` in a folder of the test's
//! own, its lab.json, and a stop by SIGTERM that must end it cleanly.

#![allow(dead_code)] // each test binary uses a subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running lab; killed if the test ends without stopping it.
pub struct Lab {
    /// `None` once stopped.
    child: Option<Child>,
    pub dir: PathBuf,
    pub json: Value,
}

impl Lab {
    /// Starts the lab in `DIR/floorwire-lab-NAME-PID` and waits (at most 120 s) for
    /// `lab ready: PATH`.
    pub fn start(name: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("floorwire-lab-{name}-{}", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_turret-sim"))
            .args(["lab", "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn lab");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(path) = line.strip_prefix("lab ready: ") {
                    let _ = tx.send(path.to_owned());
                }
            }
        });
        let path = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "no `lab ready:` line within 120 s (see {}/logs)",
                    dir.display()
                )
            });
        let json = serde_json::from_slice(&std::fs::read(&path).expect("lab.json")).expect("json");
        Lab {
            child: Some(child),
            dir,
            json,
        }
    }

    /// An endpoint of a service, from lab.json.
    pub fn endpoint(&self, service: &str, name: &str) -> SocketAddr {
        self.json["services"][service]["endpoints"][name]
            .as_str()
            .unwrap_or_else(|| panic!("lab.json: {service} has no {name} endpoint"))
            .parse()
            .expect("address")
    }

    /// A seeded user, from lab.json.
    pub fn user(&self, name: &str) -> Value {
        self.json["users"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("lab.json has no user {name}"))
    }

    /// SIGTERM; the lab must exit 0 within 30 s. Its folder is removed.
    pub fn stop(mut self) {
        let child = self.child.take().expect("the lab runs");
        crate::service::sigterm(child.id());
        let status = crate::service::wait_exit(child, Duration::from_secs(30))
            .expect("lab stops within 30 s of SIGTERM");
        assert!(status.success(), "lab exit: {status:?}");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    /// A test that ends early stops the lab with SIGTERM, so that it stops its
    /// services too (SIGKILL would leave them running), and SIGKILL after 20 s.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::service::sigterm(child.id());
            crate::service::wait_exit(child, Duration::from_secs(20));
        }
    }
}
