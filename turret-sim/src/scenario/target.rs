//! The lab a scenario runs against, as lab.json describes it (DESIGN.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;

/// A lab user with what the scenarios need of it.
#[derive(Debug, Clone)]
pub struct LabUser {
    pub name: String,
    pub password: String,
    pub device_id: String,
    /// Their extension.
    pub number: String,
}

/// lab.json, read.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub json: Value,
    pub ca_file: PathBuf,
    pub control: SocketAddr,
}

fn missing(path: &Path, what: &str) -> Error {
    Error::Scenario(format!("{}: {what}", path.display()))
}

impl Target {
    /// Reads lab.json at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| missing(path, &e.to_string()))?;
        let json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| missing(path, &format!("not JSON ({e})")))?;
        let ca_file = json["ca_file"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| missing(path, "no ca_file"))?;
        let control = json["control"]
            .as_str()
            .map(|c| c.trim_start_matches("http://"))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| missing(path, "no control address"))?;
        Ok(Self {
            path: path.to_path_buf(),
            json,
            ca_file,
            control,
        })
    }

    /// An endpoint of a service (`tss-1`, `https`).
    pub fn endpoint(&self, service: &str, name: &str) -> Result<SocketAddr, Error> {
        self.json["services"][service]["endpoints"][name]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                missing(
                    &self.path,
                    &format!("no service {service} with a {name} endpoint"),
                )
            })
    }

    /// A service's kind, if the lab has it.
    pub fn kind(&self, service: &str) -> Option<String> {
        self.json["services"][service]["kind"]
            .as_str()
            .map(str::to_owned)
    }

    /// The SIP address of a service (to compare with a turret's registrar).
    pub fn sip_of(&self, service: &str) -> Result<SocketAddr, Error> {
        self.endpoint(service, "sip")
    }

    /// A seeded user.
    pub fn user(&self, name: &str) -> Result<LabUser, Error> {
        let u = self.json["users"]
            .as_array()
            .and_then(|users| users.iter().find(|u| u["name"] == name))
            .ok_or_else(|| missing(&self.path, &format!("no user {name}")))?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(LabUser {
            name: name.to_owned(),
            password: text(&u["password"]),
            device_id: text(&u["device_id"]),
            number: text(&u["sip"]["number"]),
        })
    }

    /// The number of a line (`SH-FX`).
    pub fn line_number(&self, line: &str) -> Result<String, Error> {
        self.json["lines"]
            .as_array()
            .and_then(|lines| lines.iter().find(|l| l["id"] == line))
            .and_then(|l| l["number"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| missing(&self.path, &format!("no line {line}")))
    }

    /// The administrator's name and password.
    pub fn admin(&self) -> (String, String) {
        let a = &self.json["admin"];
        (
            a["name"].as_str().unwrap_or("admin").to_owned(),
            a["password"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// The carrier's SIP address.
    pub fn carrier(&self) -> Result<SocketAddr, Error> {
        self.endpoint("carrier", "sip")
    }

    /// The SBC's service address.
    pub fn sbc(&self) -> Result<SocketAddr, Error> {
        self.json["sbc"]["service"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| missing(&self.path, "no sbc.service"))
    }
}
