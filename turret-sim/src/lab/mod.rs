//! `turret-sim lab`: the whole dual-DC lab of DESIGN.md on loopback, each service a
//! child process of its own (the real `tss`, `tpo` and `sbc-shim` binaries; the carrier
//! and the recorders are `turret-sim` itself). The lab seeds the floor, mints SIP
//! credentials, waits until every service is healthy, writes `lab.json`, serves its
//! control port (stop and start services, for fault scenarios) and stops everything
//! on shutdown.

pub mod certs;
pub mod control;
pub mod floor;
pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::https::Client;
use floor::{Trader, lab_ip};
use process::{Readiness, Running, ServiceSpec};

/// Default address of the lab's control port.
pub const CONTROL: SocketAddr = SocketAddr::new(lab_ip(3, 254), 9000);

/// Where the lab runs from.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// State: lab.json, certificates, configuration, logs, the store, spools.
    pub dir: PathBuf,
    /// Where the `tss`, `tpo`, `sbc-shim` and `turret-sim` binaries are.
    pub bin_dir: PathBuf,
    /// The lab's control port.
    pub control: SocketAddr,
}

/// What a lab service is (lab.json's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tss,
    Tpo,
    Sbc,
    Recorder,
    Carrier,
    Ldap,
}

impl Kind {
    /// As lab.json spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tss => "tss",
            Kind::Tpo => "tpo",
            Kind::Sbc => "sbc",
            Kind::Recorder => "recorder",
            Kind::Carrier => "carrier",
            Kind::Ldap => "ldap",
        }
    }
}

/// A lab service: how it starts and what lab.json says of it.
#[derive(Debug, Clone)]
pub struct LabService {
    pub kind: Kind,
    pub dc: u8,
    pub spec: ServiceSpec,
    /// Endpoints named in lab.json besides those of its ready line.
    pub endpoints: BTreeMap<String, String>,
}

impl LabService {
    /// Its data centre as lab.json and the Prometheus targets name it (`dc1`…); the
    /// carrier stands outside them (`external`).
    fn dc_label(&self) -> String {
        match self.kind {
            Kind::Carrier => "external".to_owned(),
            _ => format!("dc{}", self.dc),
        }
    }
}

/// Every service of the lab, in start order, and the processes running.
#[derive(Debug)]
pub struct Supervisor {
    services: Vec<LabService>,
    running: BTreeMap<String, Running>,
    ca_file: PathBuf,
}

impl Supervisor {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&LabService> {
        self.services.iter().find(|s| s.spec.name == name)
    }

    /// Names and whether each runs.
    pub fn status(&mut self) -> Vec<(String, &'static str, bool)> {
        let mut out = Vec::new();
        for s in &self.services {
            let up = match self.running.get_mut(&s.spec.name) {
                Some(r) => r.exited().is_none(),
                None => false,
            };
            out.push((s.spec.name.clone(), s.kind.as_str(), up));
        }
        out
    }

    /// Starts `name` (if it is not running) and waits until it is healthy.
    pub async fn start(&mut self, name: &str) -> Result<(), Error> {
        let service = self
            .service(name)
            .cloned()
            .ok_or_else(|| Error::Lab(format!("no lab service called {name}")))?;
        if let Some(r) = self.running.get_mut(name) {
            if r.exited().is_none() {
                return Ok(());
            }
            self.running.remove(name);
        }
        let running = service.spec.start().await?;
        let admin = running.endpoint("admin");
        self.running.insert(name.to_owned(), running);
        if let Some(admin) = admin {
            wait_healthy(name, admin, service.kind).await?;
        }
        // A TPO started again is not ready for calls until its peers see it (and it
        // them); an SBC node not until the pair has one active node.
        match service.kind {
            Kind::Tpo => wait_peers_up(self).await?,
            Kind::Sbc => wait_one_sbc_active(self).await?,
            _ => {}
        }
        tracing::info!(service = name, "lab service up");
        Ok(())
    }

    /// Stops `name`: SIGTERM (or SIGKILL with `kill`, a crash).
    pub async fn stop(&mut self, name: &str, kill: bool) -> Result<(), Error> {
        if self.service(name).is_none() {
            return Err(Error::Lab(format!("no lab service called {name}")));
        }
        if let Some(r) = self.running.remove(name) {
            let status = if kill { r.kill().await } else { r.stop().await };
            tracing::info!(service = name, ?status, kill, "lab service stopped");
        }
        Ok(())
    }

    /// Stops every service, in reverse start order.
    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self
            .services
            .iter()
            .rev()
            .map(|s| s.spec.name.clone())
            .collect();
        for name in names {
            let _ = self.stop(&name, false).await;
        }
    }

    /// The endpoints of `name`: its ready line's and the fixed ones.
    fn endpoints(&self, name: &str) -> BTreeMap<String, String> {
        let mut out = self
            .service(name)
            .map(|s| s.endpoints.clone())
            .unwrap_or_default();
        if let Some(r) = self.running.get(name) {
            for word in r.ready.split_whitespace() {
                if let Some((k, v)) = word.split_once('=')
                    && v.parse::<SocketAddr>().is_ok()
                {
                    // lab.json names endpoints by protocol: the TSS's `api` is `https`.
                    let k = if k == "api" { "https" } else { k };
                    out.entry(k.to_owned()).or_insert_with(|| v.to_owned());
                }
            }
        }
        out
    }
}

/// Waits (at most 30 s) for `/healthz` to answer 200; a TPO must also hold a
/// configuration from the TSS.
async fn wait_healthy(name: &str, admin: SocketAddr, kind: Kind) -> Result<(), Error> {
    let client = Client::http(admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthy = matches!(client.get("/healthz").await, Ok(a) if a.status == 200);
        let configured = kind != Kind::Tpo
            || metric(admin, "floorwire_tpo_config_revision")
                .await
                .is_some_and(|v| v > 0.0);
        if healthy && configured {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Lab(format!(
                "{name}: not healthy within 30 s (admin {admin}: /healthz {}, configuration {})",
                if healthy { "200" } else { "not 200" },
                if configured {
                    "held"
                } else {
                    "not yet from the TSS"
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sample's value from a service's `/metrics` (the first line for `name`, with or
/// without labels).
pub async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let answer = Client::http(admin).get("/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        l.rsplit(' ').next()?.parse().ok()
    })
}

/// The sum of every sample of `name` on a service's `/metrics` (0 when absent).
pub async fn metric_sum(admin: SocketAddr, name: &str) -> f64 {
    let Ok(answer) = Client::http(admin).get("/metrics").await else {
        return 0.0;
    };
    String::from_utf8_lossy(&answer.body)
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The binaries the lab runs, checked to exist.
struct Binaries {
    tss: PathBuf,
    tpo: PathBuf,
    sbc: PathBuf,
    sim: PathBuf,
}

impl Binaries {
    fn find(bin_dir: &Path) -> Result<Self, Error> {
        let find = |name: &str| {
            let path = bin_dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Lab(format!(
                    "{name} not found in {} (build the services first: cargo build --release --bins; or pass --bin-dir)",
                    bin_dir.display()
                )))
            }
        };
        Ok(Self {
            tss: find("tss")?,
            tpo: find("tpo")?,
            sbc: find("sbc-shim")?,
            sim: match std::env::current_exe() {
                Ok(p) => p,
                Err(_) => find("turret-sim")?,
            },
        })
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Every service of the lab, in start order.
fn plan(dir: &Path, bins: &Binaries, ca: &certs::LabCa) -> Result<Vec<LabService>, Error> {
    let logs = dir.join("logs");
    let spec = |name: &str, program: &Path, args: &[&str], env: Vec<(String, String)>| {
        let work = dir.join(name);
        ServiceSpec {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env,
            dir: work,
            log: logs.join(format!("{name}.log")),
            ready: Readiness::ReadyLine,
        }
    };
    let ca_file = ca.ca_file.display().to_string();
    let store = format!("sqlite://{}?mode=rwc", dir.join("tss.sqlite3").display());
    let mut services = Vec::new();
    let directories = slapd_installed();
    if !directories {
        tracing::warn!(
            "slapd is not installed (Debian: apt-get install slapd): the lab runs without \
             directories and the TSSs check logins against their own user table"
        );
    }
    if directories {
        for dc in floor::DCS {
            let name = format!("ldap-{dc}");
            let ldaps = floor::ldap_ldaps(dc);
            let conf = directory(&dir.join(&name), ca, &dir.join("certs"), &name, ldaps)?;
            let mut service = spec(
                &name,
                Path::new(SLAPD),
                &[
                    "-f",
                    &conf.display().to_string(),
                    "-h",
                    &format!("ldaps://{ldaps}/"),
                    "-d",
                    "0",
                ],
                Vec::new(),
            );
            service.ready = Readiness::Listening("ldaps", ldaps);
            services.push(LabService {
                kind: Kind::Ldap,
                dc,
                spec: service,
                endpoints: BTreeMap::new(),
            });
        }
    }
    for dc in floor::DCS {
        let name = format!("tss-{dc}");
        let ip = floor::tss_ip(dc);
        let cert = ca.server(&dir.join("certs"), &name, ip)?;
        let mut vars = env(&[
            ("TSS__ADMIN__LISTEN", format!("{ip}:9000")),
            ("TSS__STORE__URL", store.clone()),
            ("TSS__API__LISTEN", format!("{ip}:8443")),
            ("TSS__API__CERT_FILE", cert.cert.display().to_string()),
            ("TSS__API__KEY_FILE", cert.key.display().to_string()),
            (
                "TSS__API__TPO_TOKENS",
                format!("[\"{}\"]", floor::TPO_TOKEN),
            ),
            ("TSS__SIP__REALM", floor::REALM.to_owned()),
            ("TSS__FTPES__LISTEN", format!("{ip}:2121")),
            ("TSS__FTPES__CERT_FILE", cert.cert.display().to_string()),
            ("TSS__FTPES__KEY_FILE", cert.key.display().to_string()),
            (
                "TSS__FTPES__SOFTWARE_DIR",
                dir.join("software").display().to_string(),
            ),
        ]);
        if directories {
            // This DC's directory first, the other's second.
            let other = if dc == 1 { 2 } else { 1 };
            vars.extend(env(&[
                (
                    "TSS__LDAP__URLS",
                    format!(
                        "[\"ldaps://{}\",\"ldaps://{}\"]",
                        floor::ldap_ldaps(dc),
                        floor::ldap_ldaps(other)
                    ),
                ),
                ("TSS__LDAP__CA_FILE", ca_file.clone()),
            ]));
        }
        services.push(LabService {
            kind: Kind::Tss,
            dc,
            spec: spec(&name, &bins.tss, &["serve"], vars),
            endpoints: BTreeMap::new(),
        });
    }
    for dc in floor::DCS {
        let name = format!("sbc-{dc}");
        let ip = floor::sbc_ip(dc);
        let other = if dc == 1 { 2 } else { 1 };
        let vars = env(&[
            ("SBC_SHIM__ADMIN__LISTEN", format!("{ip}:9200")),
            ("SBC_SHIM__SIP__LISTEN", floor::sbc_service().to_string()),
            (
                "SBC_SHIM__CARRIER__ADDRESS",
                floor::carrier_sip().to_string(),
            ),
            ("SBC_SHIM__HA__MODE", "pair".to_owned()),
            ("SBC_SHIM__HA__NODE", name.clone()),
            ("SBC_SHIM__HA__LISTEN", format!("{ip}:5070")),
            (
                "SBC_SHIM__HA__PEER",
                format!("{}:5070", floor::sbc_ip(other)),
            ),
        ]);
        let mut endpoints = BTreeMap::new();
        endpoints.insert("sip".to_owned(), floor::sbc_service().to_string());
        endpoints.insert("replication".to_owned(), format!("{ip}:5070"));
        services.push(LabService {
            kind: Kind::Sbc,
            dc,
            spec: spec(&name, &bins.sbc, &["serve"], vars),
            endpoints,
        });
    }
    let carrier = floor::carrier_sip();
    services.push(LabService {
        kind: Kind::Carrier,
        dc: 3,
        spec: spec(
            "carrier",
            &bins.sim,
            &[
                "carrier",
                "--sip",
                &carrier.to_string(),
                "--admin",
                &format!("{}:9100", carrier.ip()),
                "--sbc",
                &floor::sbc_service().to_string(),
            ],
            Vec::new(),
        ),
        endpoints: BTreeMap::new(),
    });
    for dc in floor::DCS {
        let name = format!("recorder-{dc}");
        let sip = floor::recorder_sip(dc);
        let recordings = dir.join(&name).join("recordings").display().to_string();
        services.push(LabService {
            kind: Kind::Recorder,
            dc,
            spec: spec(
                &name,
                &bins.sim,
                &[
                    "recorder",
                    "--sip",
                    &sip.to_string(),
                    "--admin",
                    &format!("{}:9100", sip.ip()),
                    "--replay",
                    &format!("{}:8080", sip.ip()),
                    "--dir",
                    &recordings,
                ],
                Vec::new(),
            ),
            endpoints: BTreeMap::new(),
        });
    }
    let peers: Vec<String> = floor::tpos()
        .iter()
        .map(|t| format!("\"{}\"", t.2))
        .collect();
    for (name, dc, sip) in floor::tpos() {
        let ip = sip.ip();
        let vars = env(&[
            ("TPO__ADMIN__LISTEN", format!("{ip}:9100")),
            ("TPO__SIP__LISTEN", sip.to_string()),
            ("TPO__SIP__REALM", floor::REALM.to_owned()),
            (
                "TPO__TSS__URL",
                format!("https://{}:8443", floor::tss_ip(dc)),
            ),
            (
                "TPO__TSS__FALLBACK_URLS",
                format!(
                    "[\"https://{}:8443\"]",
                    floor::tss_ip(if dc == 1 { 2 } else { 1 })
                ),
            ),
            ("TPO__TSS__TOKEN", floor::TPO_TOKEN.to_owned()),
            ("TPO__TSS__CA_FILE", ca_file.clone()),
            ("TPO__TSS__POLL_INTERVAL_MS", "500".to_owned()),
            (
                "TPO__CALL_RECORDS__SPOOL_DIR",
                dir.join(&name).join("call-records").display().to_string(),
            ),
            ("TPO__CALL_RECORDS__TPO", name.clone()),
            ("TPO__SBC__ADDRESS", floor::sbc_service().to_string()),
            ("TPO__PEERS__ADDRESSES", format!("[{}]", peers.join(","))),
        ]);
        services.push(LabService {
            kind: Kind::Tpo,
            dc,
            spec: spec(&name, &bins.tpo, &["serve"], vars),
            endpoints: BTreeMap::new(),
        });
    }
    Ok(services)
}

/// OpenLDAP's server and loader, as Debian installs them.
const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";

/// Whether the lab can run directory servers (Debian's `slapd` package).
pub fn slapd_installed() -> bool {
    Path::new(SLAPD).is_file() && Path::new(SLAPADD).is_file()
}

/// Writes a directory server's configuration (LDAPS with a lab certificate) into
/// `root`, loads it with the lab's people (`slapadd`), and returns the file.
fn directory(
    root: &Path,
    ca: &certs::LabCa,
    certs_dir: &Path,
    name: &str,
    ldaps: SocketAddr,
) -> Result<PathBuf, Error> {
    let db = root.join("db");
    std::fs::create_dir_all(&db)?;
    let cert = ca.server(certs_dir, name, ldaps.ip())?;
    let conf = root.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {root}/slapd.pid\n\
             TLSCACertificateFile {ca}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"{base}\"\n\
             rootdn \"cn=manager,{base}\"\n\
             directory {db}\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by * read\n",
            root = root.display(),
            ca = ca.ca_file.display(),
            cert = cert.cert.display(),
            key = cert.key.display(),
            base = floor::LDAP_BASE,
            db = db.display(),
        ),
    )?;
    let ldif = root.join("people.ldif");
    std::fs::write(&ldif, floor::directory_ldif())?;
    let out = std::process::Command::new(SLAPADD)
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(&ldif)
        .output()?;
    if !out.status.success() {
        return Err(Error::Lab(format!(
            "{name}: slapadd: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(conf)
}

/// Makes the lab's folders afresh (the store and spools start from the seed).
fn prepare(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    for stale in [
        "tss.sqlite3",
        "tss.sqlite3-wal",
        "tss.sqlite3-shm",
        "lab.json",
        PROMETHEUS_TARGETS,
    ] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    for (name, _, _) in floor::tpos() {
        let _ = std::fs::remove_dir_all(dir.join(name));
    }
    for dc in floor::DCS {
        let _ = std::fs::remove_dir_all(dir.join(format!("recorder-{dc}")));
        let _ = std::fs::remove_dir_all(dir.join(format!("ldap-{dc}")));
    }
    for sub in ["logs", "config", "software", "certs"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    Ok(dir)
}

/// Seeds the store with `tss seed` (run as tss-1 would run).
async fn seed(dir: &Path, tss: &LabService) -> Result<(), Error> {
    let (package, version, file_name, content) = floor::SOFTWARE;
    let _ = (package, version);
    std::fs::write(dir.join("software").join(file_name), content)?;
    let sha = hex(&sha2::Sha256::digest(content));
    let seed_file = dir.join("config").join("seed.json");
    std::fs::write(
        &seed_file,
        serde_json::to_vec_pretty(&floor::seed(&sha)).unwrap_or_default(),
    )?;
    std::fs::create_dir_all(&tss.spec.dir)?;
    let output = tokio::process::Command::new(&tss.spec.program)
        .args(["seed", &seed_file.display().to_string()])
        .envs(tss.spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&tss.spec.dir)
        .output()
        .await?;
    if !output.status.success() {
        return Err(Error::Lab(format!(
            "tss seed {}: {}",
            seed_file.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A trader's minted SIP credential.
#[derive(Debug, Clone)]
struct Minted {
    username: String,
    password: String,
}

/// Mints a SIP credential for every trader's turret through the TSS API; returns them
/// and the store revision after the last.
async fn mint(tss: SocketAddr, ca_file: &Path) -> Result<(Vec<Minted>, i64), Error> {
    let client = Client::https(tss, ca_file)?.with_basic(floor::ADMIN_USER, floor::ADMIN_PASSWORD);
    let mut minted = Vec::new();
    let mut revision = 0;
    for t in floor::traders() {
        let answer = client
            .post(
                &format!("/api/turrets/{}/sip-credential", t.device_id),
                None,
            )
            .await?;
        if answer.status != 201 {
            return Err(Error::Lab(format!(
                "minting {}'s SIP credential: HTTP {} {}",
                t.device_id,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )));
        }
        let v = answer.json()?;
        revision = v["revision"].as_i64().unwrap_or(revision);
        minted.push(Minted {
            username: v["credential"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            password: v["credential"]["password"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    Ok((minted, revision))
}

/// The lab's Prometheus scrape targets, beside lab.json (deploy/prometheus reads it).
pub const PROMETHEUS_TARGETS: &str = "prometheus-targets.json";

/// Prometheus file-based service discovery for the lab: each service's admin port
/// (`/metrics`), labelled with its `job` (kind), `service` name and `dc`.
fn prometheus_targets(supervisor: &Supervisor) -> Value {
    let groups: Vec<Value> = supervisor
        .services
        .iter()
        .filter_map(|s| {
            let admin = supervisor.endpoints(&s.spec.name).remove("admin")?;
            Some(json!({
                "targets": [admin],
                "labels": {
                    "job": s.kind.as_str(),
                    "service": s.spec.name,
                    "dc": s.dc_label(),
                },
            }))
        })
        .collect();
    Value::Array(groups)
}

/// The lab.json document (DESIGN.md, "Lab topology").
fn lab_json(
    supervisor: &Supervisor,
    traders: &[Trader],
    minted: &[Minted],
    control: SocketAddr,
) -> Value {
    let mut services = serde_json::Map::new();
    for s in &supervisor.services {
        services.insert(
            s.spec.name.clone(),
            json!({
                "kind": s.kind.as_str(),
                "dc": s.dc_label(),
                "endpoints": supervisor.endpoints(&s.spec.name),
                "log": s.spec.log.display().to_string(),
            }),
        );
    }
    let users: Vec<Value> = traders
        .iter()
        .zip(minted)
        .map(|(t, m)| {
            json!({
                "name": t.name, "password": t.password, "tpo": t.tpo, "site": t.site,
                "device_id": t.device_id,
                "sip": {"username": m.username, "password": m.password, "realm": floor::REALM,
                        "registrar": t.registrar.to_string(), "number": t.number},
            })
        })
        .collect();
    let shared: Vec<Value> = floor::SHARED_LINES
        .iter()
        .map(|(id, number, label, holders)| {
            json!({"id": id, "kind": "shared", "number": number, "label": label,
                   "users": holders.iter().map(|n| traders[n - 1].name.clone()).collect::<Vec<_>>()})
        })
        .collect();
    let wires: Vec<Value> = floor::PRIVATE_WIRES
        .iter()
        .flat_map(|(la, na, lb, nb, a, b)| {
            [
                json!({"id": la, "kind": "private_wire_ard", "number": na, "far_end": nb, "users": [traders[a - 1].name]}),
                json!({"id": lb, "kind": "private_wire_ard", "number": nb, "far_end": na, "users": [traders[b - 1].name]}),
            ]
        })
        .collect();
    json!({
        "services": services,
        "users": users,
        "admin": {"name": floor::ADMIN_USER, "password": floor::ADMIN_PASSWORD},
        "lines": shared.into_iter().chain(wires).collect::<Vec<_>>(),
        "carrier": {"sip": floor::carrier_sip().to_string(), "dids": floor::dids()},
        "sbc": {"service": floor::sbc_service().to_string()},
        "ca_file": supervisor.ca_file.display().to_string(),
        "control": format!("http://{control}"),
    })
}

/// Runs the lab until `shutdown`; `ready` gets lab.json's path once every service is
/// healthy.
pub async fn run(
    options: LabOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Path),
) -> Result<(), Error> {
    let dir = prepare(&options.dir)?;
    let bins = Binaries::find(&options.bin_dir)?;
    let ca = certs::LabCa::open(&dir.join("certs"))?;
    let services = plan(&dir, &bins, &ca)?;
    for s in &services {
        std::fs::create_dir_all(&s.spec.dir)?;
        let listing: String = s
            .spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        std::fs::write(
            dir.join("config").join(format!("{}.env", s.spec.name)),
            listing,
        )?;
    }
    let first_tss = services
        .iter()
        .find(|s| s.kind == Kind::Tss)
        .ok_or_else(|| Error::Lab("the lab has no TSS".into()))?;
    seed(&dir, first_tss).await?;
    let mut supervisor = Supervisor {
        services,
        running: BTreeMap::new(),
        ca_file: ca.ca_file.clone(),
    };
    // Ctrl-C while the lab starts stops what has started, at once.
    let started = tokio::select! {
        started = start_all(&mut supervisor) => Some(started),
        _ = shutdown.cancelled() => None,
    };
    let minted = match started {
        Some(Ok(minted)) => minted,
        Some(Err(e)) => {
            supervisor.stop_all().await;
            return Err(e);
        }
        None => {
            tracing::info!("lab stopped while it was starting");
            supervisor.stop_all().await;
            return Ok(());
        }
    };
    let supervisor = Arc::new(tokio::sync::Mutex::new(supervisor));
    let (control_addr, control) =
        match control::serve(options.control, supervisor.clone(), shutdown.clone()).await {
            Ok(c) => c,
            Err(e) => {
                supervisor.lock().await.stop_all().await;
                return Err(e);
            }
        };
    let document = lab_json(
        &*supervisor.lock().await,
        &floor::traders(),
        &minted,
        control_addr,
    );
    // Before lab.json: whoever sees lab.json finds the scrape targets too.
    std::fs::write(
        dir.join(PROMETHEUS_TARGETS),
        serde_json::to_vec_pretty(&prometheus_targets(&*supervisor.lock().await))
            .unwrap_or_default(),
    )?;
    let path = dir.join("lab.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&document).unwrap_or_default(),
    )?;
    ready(&path);
    shutdown.cancelled().await;
    tracing::info!("lab stopping");
    supervisor.lock().await.stop_all().await;
    let _ = control.await;
    Ok(())
}

/// Starts every service in order, minting the turrets' credentials once the TSS is up
/// and waiting for every TPO to hold them.
async fn start_all(supervisor: &mut Supervisor) -> Result<Vec<Minted>, Error> {
    let names: Vec<(String, Kind)> = supervisor
        .services
        .iter()
        .map(|s| (s.spec.name.clone(), s.kind))
        .collect();
    let mut minted = None;
    for (name, kind) in names {
        if kind == Kind::Tpo && minted.is_none() {
            let tss = supervisor
                .running
                .get("tss-1")
                .and_then(|r| r.endpoint("api"))
                .ok_or_else(|| Error::Lab("tss-1 names no api endpoint".into()))?;
            minted = Some(mint(tss, &supervisor.ca_file).await?);
        }
        supervisor.start(&name).await?;
        if kind == Kind::Tpo
            && let (Some((_, revision)), Some(admin)) = (
                &minted,
                supervisor
                    .running
                    .get(&name)
                    .and_then(|r| r.endpoint("admin")),
            )
        {
            wait_revision(&name, admin, *revision).await?;
        }
    }
    minted
        .map(|(m, _)| m)
        .ok_or_else(|| Error::Lab("the lab has no TPO".into()))
}

/// Waits (at most 10 s) until every TPO sees every other as up, so that a call placed
/// as soon as the lab is ready forks to every peer.
async fn wait_peers_up(supervisor: &Supervisor) -> Result<(), Error> {
    let tpos: Vec<(String, SocketAddr)> = supervisor
        .services
        .iter()
        .filter(|s| s.kind == Kind::Tpo)
        .filter_map(|s| {
            let admin = supervisor.running.get(&s.spec.name)?.endpoint("admin")?;
            Some((s.spec.name.clone(), admin))
        })
        .collect();
    // Peers that are not running show 0: each TPO must see every running other.
    let peers = tpos.len().saturating_sub(1) as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, admin) in &tpos {
        loop {
            let up = metric_sum(*admin, "floorwire_tpo_peer_up").await;
            if up == peers {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Lab(format!(
                    "{name}: sees {up} of its {peers} peers up after 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Waits (at most 30 s) until a TPO holds the store revision `revision`.
async fn wait_revision(name: &str, admin: SocketAddr, revision: i64) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(admin, "floorwire_tpo_config_revision")
        .await
        .unwrap_or(0.0)
        < revision as f64
    {
        if Instant::now() > deadline {
            return Err(Error::Lab(format!(
                "{name}: store revision {revision} not held within 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits (at most 10 s) until exactly one running SBC node serves.
async fn wait_one_sbc_active(supervisor: &Supervisor) -> Result<(), Error> {
    let admins: Vec<SocketAddr> = supervisor
        .services
        .iter()
        .filter(|s| s.kind == Kind::Sbc)
        .filter_map(|s| supervisor.running.get(&s.spec.name))
        .filter_map(|r| r.endpoint("admin"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut active = 0.0;
        for admin in &admins {
            active += metric(*admin, "floorwire_sbc_ha_active")
                .await
                .unwrap_or(0.0);
        }
        if active == 1.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Lab(format!(
                "the SBC pair: {active} nodes serve after 10 s (want 1)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
