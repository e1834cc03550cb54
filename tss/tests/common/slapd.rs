//! Real OpenLDAP `slapd` instances for login tests: a throwaway CA and server
//! certificate (rcgen), a directory loaded with `slapadd`, slapd in the foreground on
//! loopback with LDAPS and StartTLS. Killed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test directory's people: (uid, password, admin?).
pub const PEOPLE: &[(&str, &str, bool)] = &[
    ("admin", "admin-pass", true),
    ("trader01", "t01-pass", false),
    ("trader02", "t02-pass", false),
];

pub const BASE: &str = "dc=floorwire,dc=test";

/// Whether slapd is installed; under CI it must be.
pub fn available() -> bool {
    let found = Path::new("/usr/sbin/slapd").exists() && Path::new("/usr/sbin/slapadd").exists();
    if !found {
        assert!(
            !super::in_ci(),
            "slapd is required under CI=true (deploy/test.sh installs slapd)"
        );
        eprintln!("SKIPPED: slapd is not installed");
    }
    found
}

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki(dir: &Path, tag: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Floorwire test CA {tag}"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.join(format!("ca-{tag}.pem")),
        cert: dir.join(format!("cert-{tag}.pem")),
        key: dir.join(format!("key-{tag}.pem")),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One running slapd.
pub struct Slapd {
    child: Option<Child>,
    /// `ldaps://127.0.0.1:PORT`
    pub ldaps: String,
    /// `ldap://127.0.0.1:PORT` (StartTLS offered)
    pub ldap: String,
    log: PathBuf,
}

impl Slapd {
    /// Loads the test people into a fresh directory under `dir/name` and starts slapd.
    pub fn start(dir: &Path, name: &str, pki: &Pki) -> Slapd {
        let root = dir.join(name);
        let db = root.join("db");
        std::fs::create_dir_all(&db).unwrap();
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
                 suffix \"{BASE}\"\n\
                 rootdn \"cn=manager,{BASE}\"\n\
                 rootpw manager-secret\n\
                 directory {db}\n\
                 access to attrs=userPassword by anonymous auth by * none\n\
                 access to * by * read\n",
                root = root.display(),
                ca = pki.ca.display(),
                cert = pki.cert.display(),
                key = pki.key.display(),
                db = db.display(),
            ),
        )
        .unwrap();
        let mut ldif = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Floorwire\ndc: floorwire\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n"
        );
        for (uid, password, _) in PEOPLE {
            ldif.push_str(&format!(
                "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {password}\n\n"
            ));
        }
        ldif.push_str(&format!(
            "dn: cn=tss-admins,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: tss-admins\n"
        ));
        for (uid, _, admin) in PEOPLE {
            if *admin {
                ldif.push_str(&format!("member: uid={uid},ou=people,{BASE}\n"));
            }
        }
        let ldif_path = root.join("data.ldif");
        std::fs::write(&ldif_path, ldif).unwrap();
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ps, p) = (free_port(), free_port());
        let ldaps = format!("ldaps://127.0.0.1:{ps}");
        let ldap = format!("ldap://127.0.0.1:{p}");
        let log = root.join("slapd.log");
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("{ldaps}/ {ldap}/"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut slapd = Slapd {
            child: Some(child),
            ldaps,
            ldap,
            log,
        };
        slapd.wait_listening(ps);
        slapd
    }

    fn wait_listening(&mut self, port: u16) {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "slapd exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops this slapd (as a directory server dying would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The injection corpus: every user name in `../shared/corpora/ldap`.
pub fn corpus() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpora/ldap");
    let tsv = std::fs::read_to_string(format!("{dir}/injection-usernames.tsv"))
        .expect("../shared/corpora/ldap/injection-usernames.tsv");
    let mut out = Vec::new();
    for line in tsv.lines().skip(1) {
        let mut cols = line.split('\t');
        let (Some(name), Some(repr)) = (cols.next(), cols.next()) else {
            continue;
        };
        out.push((name.to_owned(), decode_python_repr(repr)));
    }
    let fuzz = std::fs::read_to_string(format!("{dir}/seclists-LDAP.Fuzzing.txt"))
        .expect("../shared/corpora/ldap/seclists-LDAP.Fuzzing.txt");
    for (i, line) in fuzz.lines().enumerate() {
        out.push((format!("seclists-{}", i + 1), line.to_owned()));
    }
    assert!(out.len() >= 50, "corpus too small: {}", out.len());
    out
}

/// Decodes the corpus's Python literals: `'...'` with `\\ \' \xNN \r \n \t \uNNNN`
/// escapes, or `'c' * N`.
fn decode_python_repr(repr: &str) -> String {
    if let Some((lit, count)) = repr.split_once(" * ") {
        let n: usize = count.trim().parse().unwrap();
        return decode_python_repr(lit).repeat(n);
    }
    let inner = &repr[1..repr.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
            }
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
