//! The registrar's bindings (RFC 3261 §10.3), without I/O: which contacts a device's
//! address-of-record has, until when. `now` comes in as an argument.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floorwire::sip::syntax::{header_param, parse_name_addr, split_list};

/// Expiry limits, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiryPolicy {
    /// Shorter requested expiries get 423 Interval Too Brief.
    pub min_expires: u32,
    /// Longer ones are cut to this.
    pub max_expires: u32,
    /// When the REGISTER names none.
    pub default_expires: u32,
}

/// Most contacts one device keeps registered at once.
pub const MAX_BINDINGS_PER_DEVICE: usize = 8;

/// One contact of a registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the device sent it.
    pub contact: String,
    /// Where the REGISTER came from (where requests go: the device may be behind NAT).
    pub source: SocketAddr,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
}

/// What a REGISTER asks for, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// `Contact: *` (remove every binding; needs `Expires: 0`).
    pub wildcard: bool,
    pub contacts: Contacts,
    /// The `Expires` header, if any.
    pub expires: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
}

/// Contact URIs with their `expires` parameter, if any.
pub type Contacts = Vec<(String, Option<u32>)>;

/// Reads the Contact header values (each may list several contacts): whether it was
/// `*`, and the contacts.
pub fn parse_contacts(values: &[&str]) -> Result<(bool, Contacts), String> {
    let mut wildcard = false;
    let mut contacts = Vec::new();
    for value in values {
        for part in split_list(value) {
            if part == "*" {
                wildcard = true;
                continue;
            }
            let addr = parse_name_addr(part)?;
            let expires = match header_param(addr.params, "expires") {
                Some(v) => Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("bad expires parameter {v:?}"))?,
                ),
                None => None,
            };
            contacts.push((addr.uri.to_owned(), expires));
        }
    }
    if wildcard && !contacts.is_empty() {
        return Err("Contact: * cannot be listed with other contacts".into());
    }
    Ok((wildcard, contacts))
}

/// The registrar's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 200: the bindings now in force, with the seconds each has left.
    Bound(Vec<(String, u32)>),
    /// 423 with the shortest expiry accepted.
    IntervalTooBrief(u32),
    /// 400 with a reason.
    Invalid(String),
}

/// Takes `aor` out of `source`'s list in the source index (the list goes when empty).
fn unindex(index: &mut HashMap<SocketAddr, Vec<String>>, source: SocketAddr, aor: &str) {
    if let Some(aors) = index.get_mut(&source) {
        aors.retain(|a| a != aor);
        if aors.is_empty() {
            index.remove(&source);
        }
    }
}

/// Every device's bindings.
#[derive(Debug)]
pub struct Registrar {
    policy: ExpiryPolicy,
    bindings: HashMap<String, Vec<Binding>>,
    /// Source address → the devices (AoRs) with a binding from it: a call's caller is
    /// found without reading every binding. A device goes to the back of a source's
    /// list when it registers again from there; `device_at` gives the first.
    by_source: HashMap<SocketAddr, Vec<String>>,
}

impl Registrar {
    pub fn new(policy: ExpiryPolicy) -> Self {
        Registrar {
            policy,
            bindings: HashMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Applies a REGISTER from `source` for `aor` (the authenticated device user).
    pub fn register(
        &mut self,
        now: Instant,
        aor: &str,
        request: &RegisterRequest,
        source: SocketAddr,
    ) -> RegisterOutcome {
        self.expire(now);
        if request.wildcard {
            if request.expires != Some(0) {
                return RegisterOutcome::Invalid("Contact: * needs Expires: 0".into());
            }
            for b in self.bindings.remove(aor).unwrap_or_default() {
                unindex(&mut self.by_source, b.source, aor);
            }
            return RegisterOutcome::Bound(Vec::new());
        }
        let asked = |param: &Option<u32>| {
            param
                .or(request.expires)
                .unwrap_or(self.policy.default_expires)
        };
        // Every contact is checked before any is applied: a refused REGISTER changes nothing.
        if request
            .contacts
            .iter()
            .any(|(_, p)| asked(p) != 0 && asked(p) < self.policy.min_expires)
        {
            return RegisterOutcome::IntervalTooBrief(self.policy.min_expires);
        }
        let mut current = self.bindings.remove(aor).unwrap_or_default();
        for b in &current {
            unindex(&mut self.by_source, b.source, aor);
        }
        for (contact, param) in &request.contacts {
            let asked = asked(param);
            let existing = current.iter().position(|b| &b.contact == contact);
            if let Some(i) = existing {
                // §10.3 step 7: same Call-ID with an older CSeq is out of order.
                let b = &current[i];
                if b.call_id == request.call_id && request.cseq <= b.cseq {
                    continue;
                }
                current.remove(i);
            }
            if asked == 0 {
                continue;
            }
            if current.len() >= MAX_BINDINGS_PER_DEVICE {
                // The oldest contact makes room: a device that re-registers from a new
                // port keeps working, and memory stays bounded.
                current.remove(0);
            }
            let secs = asked.min(self.policy.max_expires);
            current.push(Binding {
                contact: contact.clone(),
                source,
                expires_at: now + Duration::from_secs(u64::from(secs)),
                call_id: request.call_id.clone(),
                cseq: request.cseq,
            });
        }
        let answer = current
            .iter()
            .map(|b| (b.contact.clone(), remaining(now, b.expires_at)))
            .collect();
        if !current.is_empty() {
            for b in &current {
                let aors = self.by_source.entry(b.source).or_default();
                if !aors.iter().any(|a| a == aor) {
                    aors.push(aor.to_owned());
                }
            }
            self.bindings.insert(aor.to_owned(), current);
        }
        RegisterOutcome::Bound(answer)
    }

    /// Drops bindings whose time is up; returns how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut gone = 0;
        let mut expired: Vec<(String, SocketAddr)> = Vec::new();
        self.bindings.retain(|aor, list| {
            let before = list.len();
            list.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    expired.push((aor.clone(), b.source));
                }
                live
            });
            gone += before - list.len();
            !list.is_empty()
        });
        // A device leaves a source's list when no binding of it is left from there.
        for (aor, source) in expired {
            let still_there = self
                .bindings
                .get(&aor)
                .is_some_and(|l| l.iter().any(|b| b.source == source));
            if !still_there {
                unindex(&mut self.by_source, source, &aor);
            }
        }
        gone
    }

    /// The live bindings of `aor`.
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<&Binding> {
        self.bindings
            .get(aor)
            .map(|l| l.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default()
    }

    /// The device (AoR) with a live binding registered from `source`.
    pub fn device_at(&self, now: Instant, source: SocketAddr) -> Option<&str> {
        self.by_source
            .get(&source)?
            .iter()
            .find(|aor| {
                self.bindings
                    .get(aor.as_str())
                    .is_some_and(|l| l.iter().any(|b| b.source == source && b.expires_at > now))
            })
            .map(String::as_str)
    }

    /// The devices (AoRs) with at least one live binding.
    pub fn registered(&self, now: Instant) -> impl Iterator<Item = &str> {
        self.bindings
            .iter()
            .filter(move |(_, l)| l.iter().any(|b| b.expires_at > now))
            .map(|(aor, _)| aor.as_str())
    }

    /// When the next binding expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.bindings.values().flatten().map(|b| b.expires_at).min()
    }
}

fn remaining(now: Instant, at: Instant) -> u32 {
    u32::try_from(at.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: ExpiryPolicy = ExpiryPolicy {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 600,
    };

    fn req(contacts: &[(&str, Option<u32>)], expires: Option<u32>, cseq: u32) -> RegisterRequest {
        RegisterRequest {
            wildcard: false,
            contacts: contacts.iter().map(|(c, e)| (c.to_string(), *e)).collect(),
            expires,
            call_id: "reg-1".into(),
            cseq,
        }
    }

    fn src() -> SocketAddr {
        "127.0.10.5:5060".parse().unwrap()
    }

    /// The device at a source address follows its bindings: found while bound from
    /// there, not once it moved, unregistered or expired; two devices behind one
    /// address are both found until one leaves.
    #[test]
    fn the_device_at_an_address_follows_its_bindings() {
        let mut r = Registrar::new(POLICY);
        let t0 = Instant::now();
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "127.0.10.1:5060".parse().unwrap(),
            "127.0.10.2:5060".parse().unwrap(),
            "127.0.10.3:5060".parse().unwrap(),
        );
        r.register(t0, "d1", &req(&[("sip:d1@a", None)], Some(120), 1), a);
        r.register(t0, "d2", &req(&[("sip:d2@b", None)], Some(600), 1), b);
        assert_eq!(r.device_at(t0, a), Some("d1"));
        assert_eq!(r.device_at(t0, b), Some("d2"));
        assert_eq!(r.device_at(t0, c), None);
        // d1 moves to c: its old contact goes (Expires 0), the new one is bound from c.
        r.register(
            t0,
            "d1",
            &req(&[("sip:d1@a", Some(0)), ("sip:d1@c", None)], Some(120), 2),
            c,
        );
        assert_eq!(r.device_at(t0, a), None);
        assert_eq!(r.device_at(t0, c), Some("d1"));
        // A second device behind d2's address; d2 unregisters everything.
        r.register(t0, "d3", &req(&[("sip:d3@b", None)], Some(600), 1), b);
        assert_eq!(r.device_at(t0, b), Some("d2"));
        let mut all = req(&[], Some(0), 2);
        all.wildcard = true;
        r.register(t0, "d2", &all, b);
        assert_eq!(r.device_at(t0, b), Some("d3"));
        // A fourth device behind the same address comes after d3.
        r.register(t0, "d4", &req(&[("sip:d4@b", None)], Some(600), 1), b);
        // d1's binding runs out: not found before the sweep, nor after it, and the
        // sweep leaves the others' order alone.
        let later = t0 + Duration::from_secs(121);
        assert_eq!(r.device_at(later, c), None);
        assert_eq!(r.expire(later), 1);
        assert_eq!(r.device_at(later, c), None);
        assert_eq!(r.device_at(later, b), Some("d3"));
    }

    #[test]
    fn bindings_expire_and_refresh() {
        let mut r = Registrar::new(POLICY);
        let t0 = Instant::now();
        let out = r.register(
            t0,
            "dev-T-0001",
            &req(&[("sip:dev@127.0.10.5:5060", None)], Some(120), 1),
            src(),
        );
        assert_eq!(
            out,
            RegisterOutcome::Bound(vec![("sip:dev@127.0.10.5:5060".into(), 120)])
        );
        assert_eq!(r.lookup(t0, "dev-T-0001").len(), 1);
        assert_eq!(r.registered(t0).count(), 1);
        // Refreshed before it runs out: a new expiry, one binding.
        let t1 = t0 + Duration::from_secs(100);
        r.register(
            t1,
            "dev-T-0001",
            &req(&[("sip:dev@127.0.10.5:5060", None)], Some(120), 2),
            src(),
        );
        assert_eq!(
            r.lookup(t0 + Duration::from_secs(200), "dev-T-0001").len(),
            1
        );
        // Not refreshed: gone.
        assert_eq!(r.expire(t1 + Duration::from_secs(121)), 1);
        assert_eq!(r.registered(t1 + Duration::from_secs(121)).count(), 0);
    }

    #[test]
    fn expiry_limits_and_removal() {
        let mut r = Registrar::new(POLICY);
        let t0 = Instant::now();
        let too_short = r.register(
            t0,
            "d",
            &req(&[("sip:d@ok", Some(120)), ("sip:d@h", Some(10))], None, 1),
            src(),
        );
        assert_eq!(too_short, RegisterOutcome::IntervalTooBrief(60));
        assert!(
            r.lookup(t0, "d").is_empty(),
            "a refused REGISTER binds nothing"
        );
        let capped = r.register(t0, "d", &req(&[("sip:d@h", None)], Some(999_999), 2), src());
        assert_eq!(
            capped,
            RegisterOutcome::Bound(vec![("sip:d@h".into(), 3600)])
        );
        let defaulted = r.register(t0, "e", &req(&[("sip:e@h", None)], None, 1), src());
        assert_eq!(
            defaulted,
            RegisterOutcome::Bound(vec![("sip:e@h".into(), 600)])
        );
        // Expires 0 removes that contact; `*` with Expires 0 removes all.
        r.register(t0, "d", &req(&[("sip:d@other", None)], Some(300), 3), src());
        assert_eq!(r.lookup(t0, "d").len(), 2);
        r.register(t0, "d", &req(&[("sip:d@h", Some(0))], None, 4), src());
        assert_eq!(r.lookup(t0, "d").len(), 1);
        let mut star = req(&[], Some(0), 5);
        star.wildcard = true;
        assert_eq!(
            r.register(t0, "d", &star, src()),
            RegisterOutcome::Bound(vec![])
        );
        assert!(r.lookup(t0, "d").is_empty());
        star.expires = Some(60);
        assert!(matches!(
            r.register(t0, "e", &star, src()),
            RegisterOutcome::Invalid(_)
        ));
    }

    #[test]
    fn contacts_per_device_are_bounded() {
        let mut r = Registrar::new(POLICY);
        let t0 = Instant::now();
        for port in 0..20 {
            let contact = format!("sip:d@h:{}", 5000 + port);
            r.register(
                t0,
                "d",
                &req(&[(contact.as_str(), None)], Some(300), port + 1),
                src(),
            );
        }
        let live = r.lookup(t0, "d");
        assert_eq!(live.len(), MAX_BINDINGS_PER_DEVICE);
        assert!(
            live.iter().any(|b| b.contact == "sip:d@h:5019"),
            "the newest is kept"
        );
    }

    #[test]
    fn out_of_order_register_is_ignored() {
        let mut r = Registrar::new(POLICY);
        let t0 = Instant::now();
        r.register(t0, "d", &req(&[("sip:d@h", None)], Some(300), 5), src());
        r.register(t0, "d", &req(&[("sip:d@h", Some(0))], None, 4), src());
        assert_eq!(
            r.lookup(t0, "d").len(),
            1,
            "an older CSeq cannot remove the binding"
        );
    }

    #[test]
    fn contacts_are_parsed_from_lists() {
        let (star, list) =
            parse_contacts(&["<sip:a@h:5060>;expires=60, \"B\" <sip:b@h>", "sip:c@h"]).unwrap();
        assert!(!star);
        assert_eq!(
            list,
            vec![
                ("sip:a@h:5060".into(), Some(60)),
                ("sip:b@h".into(), None),
                ("sip:c@h".into(), None)
            ]
        );
        assert_eq!(parse_contacts(&["*"]).unwrap(), (true, vec![]));
        assert!(parse_contacts(&["*, <sip:a@h>"]).is_err());
        assert!(parse_contacts(&["<sip:a@h>;expires=soon"]).is_err());
    }
}
