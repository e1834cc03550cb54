//! The lab's topology and its seeded trading floor (DESIGN.md, "Lab topology"): which
//! service listens where, and the TSS seed file the lab loads. Plain data, no I/O.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{Value, json};

/// Number of simulated traders (`trader01`…`trader20`).
pub const TRADERS: usize = 20;
/// The administrator account of the lab's TSS.
pub const ADMIN_USER: &str = "admin";
/// Its lab password (documented in docs/operations.md).
pub const ADMIN_PASSWORD: &str = "lab-admin-pass";
/// Bearer token the lab's TPOs present to the TSS.
pub const TPO_TOKEN: &str = "lab-tpo-token";
/// The digest realm of the lab.
pub const REALM: &str = "floorwire";
/// The software package every lab turret is set to run, and its content.
pub const SOFTWARE: (&str, &str, &str, &[u8]) = (
    "turret-fw",
    "4.2.0",
    "turret-fw-4.2.0.bin",
    b"floorwire lab turret firmware 4.2.0\n",
);

/// `127.0.D.H`.
pub const fn lab_ip(dc: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, dc, host))
}

/// A data centre of the lab: `1` (Paris) or `2` (Lyon).
pub const DCS: [u8; 2] = [1, 2];

/// The TSS of a data centre.
pub fn tss_ip(dc: u8) -> IpAddr {
    lab_ip(dc, 10)
}

/// The TPOs of the lab, by name, with their SIP address: `tpo-1a`, `tpo-1b` (DC1),
/// `tpo-2a`, `tpo-2b` (DC2).
pub fn tpos() -> Vec<(String, u8, SocketAddr)> {
    let mut all = Vec::new();
    for dc in DCS {
        for (letter, host) in [('a', 21), ('b', 22)] {
            all.push((
                format!("tpo-{dc}{letter}"),
                dc,
                SocketAddr::new(lab_ip(dc, host), 5060),
            ));
        }
    }
    all
}

/// The SBC service address: the DC1 node's address, taken over by the DC2 node when
/// the DC1 node fails.
pub fn sbc_service() -> SocketAddr {
    SocketAddr::new(lab_ip(1, 30), 5060)
}

/// The SBC node of a data centre (its own address: replication and admin ports).
pub fn sbc_ip(dc: u8) -> IpAddr {
    lab_ip(dc, 30)
}

/// The recorder of a data centre (SIPREC on 5060, replay HTTP on 8080).
pub fn recorder_sip(dc: u8) -> SocketAddr {
    SocketAddr::new(lab_ip(dc, 40), 5060)
}

/// The directory server (slapd) of a data centre: LDAPS on an unprivileged port
/// (production: 636).
pub fn ldap_ldaps(dc: u8) -> SocketAddr {
    SocketAddr::new(lab_ip(dc, 50), 6360)
}

/// The lab directory's base and the group whose members are TSS administrators (the
/// TSS's `[ldap]` defaults).
pub const LDAP_BASE: &str = "dc=floorwire,dc=test";

/// The LDIF the lab's directories are loaded with: the administrator and the traders,
/// with the same passwords as the TSS's own table.
pub fn directory_ldif() -> String {
    let mut people = vec![(ADMIN_USER.to_owned(), ADMIN_PASSWORD.to_owned())];
    people.extend(traders().into_iter().map(|t| (t.name, t.password)));
    let mut ldif = format!(
        "dn: {LDAP_BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Floorwire lab\ndc: floorwire\n\n\
         dn: ou=people,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    for (uid, password) in &people {
        ldif.push_str(&format!(
            "dn: uid={uid},ou=people,{LDAP_BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {password}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=tss-admins,ou=groups,{LDAP_BASE}\nobjectClass: groupOfNames\ncn: tss-admins\nmember: uid={ADMIN_USER},ou=people,{LDAP_BASE}\n"
    ));
    ldif
}

/// The carrier stand-in's SIP address.
pub fn carrier_sip() -> SocketAddr {
    SocketAddr::new(lab_ip(3, 1), 5060)
}

/// A seeded trader: who, where, which TPO they register with first, their extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trader {
    pub name: String,
    pub password: String,
    pub site: String,
    pub device_id: String,
    /// Name of the first TPO of their site (`tpo-1a`…).
    pub tpo: String,
    /// SIP address of that TPO.
    pub registrar: SocketAddr,
    /// Their own extension (a dial-tone line): `71NN`.
    pub number: String,
}

/// The lab's sites: each DC has two, homing turrets on one TPO first and the other
/// second, so that shared lines span all four TPOs.
fn sites() -> Vec<(String, &'static str, Vec<SocketAddr>, Vec<SocketAddr>)> {
    let tpos = tpos();
    let mut sites = Vec::new();
    for dc in DCS {
        let here: Vec<SocketAddr> = tpos.iter().filter(|t| t.1 == dc).map(|t| t.2).collect();
        let other = if dc == 1 { 2 } else { 1 };
        let recorders = vec![recorder_sip(dc), recorder_sip(other)];
        let city = if dc == 1 { "paris" } else { "lyon" };
        sites.push((
            format!("{city}-a"),
            city,
            vec![here[0], here[1]],
            recorders.clone(),
        ));
        sites.push((format!("{city}-b"), city, vec![here[1], here[0]], recorders));
    }
    sites
}

/// The traders: `trader01`–`05` on `paris-a` (tpo-1a first), `06`–`10` on `paris-b`
/// (tpo-1b), `11`–`15` on `lyon-a` (tpo-2a), `16`–`20` on `lyon-b` (tpo-2b).
pub fn traders() -> Vec<Trader> {
    let sites = sites();
    let tpos = tpos();
    (1..=TRADERS)
        .map(|n| {
            let (site, _, site_tpos, _) = &sites[(n - 1) / 5];
            let registrar = site_tpos[0];
            let tpo = tpos
                .iter()
                .find(|t| t.2 == registrar)
                .map(|t| t.0.clone())
                .unwrap_or_default();
            Trader {
                name: format!("trader{n:02}"),
                password: format!("trader{n:02}-lab-pass"),
                site: site.clone(),
                device_id: format!("T-{n:04}"),
                tpo,
                registrar,
                number: format!("71{n:02}"),
            }
        })
        .collect()
}

/// A shared line of the lab: id, E.164 number (a carrier DID), label, and the traders
/// with a talk appearance of it.
pub const SHARED_LINES: [(&str, &str, &str, [usize; 4]); 2] = [
    ("SH-FX", "+33142685300", "FX desk", [1, 6, 11, 16]),
    ("SH-RATES", "+33142685301", "Rates desk", [2, 7, 12, 17]),
];

/// Private wires with automatic ringdown: (line on the first trader, its number, line
/// on the second, its number, first trader, second trader).
pub const PRIVATE_WIRES: [(&str, &str, &str, &str, usize, usize); 2] = [
    ("PW-GS-PAR", "7201", "PW-GS-LYO", "7202", 1, 11),
    ("PW-JPM-PAR", "7203", "PW-JPM-LYO", "7204", 6, 16),
];

/// The numbers the carrier stand-in may call in (DIDs): the shared lines.
pub fn dids() -> Vec<String> {
    SHARED_LINES.iter().map(|l| l.1.to_owned()).collect()
}

/// The TSS seed file of the lab (docs/tss-api.md, "Seed files").
pub fn seed(software_sha256: &str) -> Value {
    let sites: Vec<Value> = sites()
        .into_iter()
        .map(|(name, city, tpos, recorders)| {
            let (postal_code, street) = if city == "paris" {
                ("75002", "1 rue de la Bourse")
            } else {
                ("69002", "2 place de la Bourse")
            };
            json!({
                "name": name,
                "description": format!("lab floor, {city}"),
                "civic_address": {"country": "FR", "city": city, "postal_code": postal_code, "street": street},
                "tpos": tpos.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "recorders": recorders.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let traders = traders();
    let mut users = vec![json!({
        "name": ADMIN_USER, "display_name": "Lab administrator", "role": "admin",
        "site": traders[0].site, "password": ADMIN_PASSWORD,
    })];
    let mut lines = Vec::new();
    let mut appearances: Vec<Vec<Value>> = vec![Vec::new(); traders.len()];
    for (i, t) in traders.iter().enumerate() {
        users.push(json!({
            "name": t.name, "display_name": format!("Trader {}", &t.name[6..]),
            "site": t.site, "password": t.password,
        }));
        let ext = format!("EXT-{}", &t.name[6..]);
        lines.push(json!({"id": ext, "kind": "dial_tone", "number": t.number, "label": format!("{} extension", t.name)}));
        appearances[i].push(json!({"line": ext, "button": 1}));
    }
    for (id, number, label, holders) in SHARED_LINES {
        lines.push(json!({"id": id, "kind": "shared", "number": number, "label": label}));
        for n in holders {
            let button = appearances[n - 1].len() + 1;
            appearances[n - 1].push(json!({"line": id, "button": button}));
        }
    }
    for (line_a, number_a, line_b, number_b, a, b) in PRIVATE_WIRES {
        let label = format!("PW {} - {}", traders[a - 1].name, traders[b - 1].name);
        lines.push(json!({"id": line_a, "kind": "private_wire_ard", "number": number_a, "label": label, "far_end": number_b}));
        lines.push(json!({"id": line_b, "kind": "private_wire_ard", "number": number_b, "label": label, "far_end": number_a}));
        for (n, line) in [(a, line_a), (b, line_b)] {
            let button = appearances[n - 1].len() + 1;
            appearances[n - 1].push(json!({"line": line, "button": button}));
        }
    }
    let profiles: serde_json::Map<String, Value> = traders
        .iter()
        .zip(appearances)
        .map(|(t, a)| {
            (
                t.name.clone(),
                json!({
                    "appearances": a,
                    "speed_dials": [{"position": 1, "label": "Carrier echo", "number": "0140000000"}],
                }),
            )
        })
        .collect();
    let (package, version, file_name, content) = SOFTWARE;
    let turrets: Vec<Value> = traders
        .iter()
        .map(|t| {
            json!({"device_id": t.device_id, "user": t.name, "model": "IQMAX", "site": t.site,
                   "software": {"package": package, "version": version}})
        })
        .collect();
    json!({
        "sites": sites,
        "users": users,
        "lines": lines,
        "profiles": profiles,
        "software": [{"name": package, "version": version, "file_name": file_name,
                      "sha256": software_sha256, "size": content.len()}],
        "turrets": turrets,
        "dial_plan": [
            {"prefix": "7", "route": "internal", "description": "extensions and private wires"},
            {"prefix": "0", "route": "sbc", "description": "national and international"},
            {"prefix": "+", "route": "sbc", "description": "E.164"},
            {"prefix": "08", "route": "refuse", "description": "premium rate"},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traders_spread_over_the_four_tpos() {
        let traders = traders();
        assert_eq!(traders.len(), TRADERS);
        assert_eq!(traders[0].tpo, "tpo-1a");
        assert_eq!(traders[5].tpo, "tpo-1b");
        assert_eq!(traders[10].tpo, "tpo-2a");
        assert_eq!(traders[19].tpo, "tpo-2b");
        assert_eq!(traders[19].registrar, "127.0.2.22:5060".parse().expect("a"));
        assert_eq!(traders[0].number, "7101");
        for (_, _, _, holders) in SHARED_LINES {
            let homes: std::collections::BTreeSet<&str> = holders
                .iter()
                .map(|n| traders[n - 1].tpo.as_str())
                .collect();
            assert_eq!(homes.len(), 4, "each shared line spans the four TPOs");
        }
    }

    #[test]
    fn seed_names_every_line_it_uses() {
        let seed = seed("00");
        let lines: Vec<&str> = seed["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["id"].as_str())
            .collect();
        for (_, profile) in seed["profiles"].as_object().expect("profiles") {
            for a in profile["appearances"].as_array().expect("appearances") {
                assert!(lines.contains(&a["line"].as_str().expect("line")));
            }
        }
        let numbers: Vec<&str> = seed["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["number"].as_str())
            .collect();
        for far_end in seed["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["far_end"].as_str())
        {
            assert!(
                numbers.contains(&far_end),
                "far end {far_end} is a lab number"
            );
        }
        assert_eq!(seed["users"].as_array().expect("users").len(), TRADERS + 1);
    }
}
