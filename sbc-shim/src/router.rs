//! The SBC's routing decision for the B2BUA core: which way a call goes (from a TPO to
//! the carrier, or from the carrier to the TPOs), its numbers normalised by the rule
//! table, admission by trunk policy, and the codec plan towards the carrier.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use floorwire::rtp::Transcode;
use floorwire::rtp::g711::Law;
use floorwire::sdp::Codec;
use floorwire::sip::b2bua::{Outbound, RouteRefusal, Router};
use floorwire::sip::msg::{Header, Request};
use floorwire::sip::syntax::parse_name_addr;

use crate::normalise::{Context, Direction, Field, Normalised, RuleSet};
use crate::policy::{Admission, PolicyRefusal};

/// The rule table in force; replaced whole on reload, read by every new call.
pub type SharedRules = Arc<RwLock<Arc<RuleSet>>>;

/// Where the SBC sends calls and what it accepts them from.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The carrier's signalling address.
    pub carrier: SocketAddr,
    /// Trunk (policy) name of the carrier.
    pub carrier_trunk: String,
    /// TPOs, tried in order for calls from the carrier.
    pub tpos: Vec<SocketAddr>,
    /// Trunk name under which calls from the TPOs are normalised.
    pub tpo_trunk: String,
    /// Host put in the From of calls we send (our service address).
    pub local_host: String,
}

/// Routes calls through the SBC.
#[derive(Debug)]
pub struct SbcRouter {
    rules: SharedRules,
    admission: Admission,
    topology: Topology,
}

fn refusal(p: PolicyRefusal) -> RouteRefusal {
    RouteRefusal {
        status: p.status,
        reason: p.reason,
        retry_after: p.retry_after,
    }
}

/// The user part of a SIP or tel URI (the number), without parameters.
pub fn number_of(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .map(|r| r.split_once('@').map(|(user, _)| user))
        .unwrap_or_else(|| uri.strip_prefix("tel:"))?;
    let number = rest.split(';').next()?.trim();
    (!number.is_empty()).then(|| number.to_owned())
}

fn from_number(request: &Request) -> Option<String> {
    request.headers.iter().find_map(|h| match h {
        Header::From(f) => parse_name_addr(f.value())
            .ok()
            .and_then(|n| number_of(n.uri)),
        _ => None,
    })
}

fn law(codec: Codec) -> Law {
    if codec == Codec::Pcmu {
        Law::MuLaw
    } else {
        Law::ALaw
    }
}

impl SbcRouter {
    /// A router over `rules` (shared with whoever reloads them) and trunk `admission`.
    pub fn new(rules: SharedRules, admission: Admission, topology: Topology) -> Self {
        Self {
            rules,
            admission,
            topology,
        }
    }

    /// Calls up on `trunk` as admission counts them.
    pub fn active(&self, trunk: &str) -> u32 {
        self.admission.active(trunk)
    }

    fn rules(&self) -> Arc<RuleSet> {
        match self.rules.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn normalise(
        rules: &RuleSet,
        number: &str,
        direction: Direction,
        field: Field,
        trunk: &str,
    ) -> Result<Normalised, RouteRefusal> {
        let context = Context {
            direction,
            field,
            trunk,
        };
        rules.normalise(number, &context).map_err(|r| RouteRefusal {
            status: r.status,
            reason: format!("{number}: {r} [{}]", rules.version()),
            retry_after: None,
        })
    }

    /// The calling number as the far side should see it; a number the rules refuse
    /// goes as it came (a caller ID is no reason to refuse a call).
    fn calling(rules: &RuleSet, raw: &str, direction: Direction, trunk: &str) -> String {
        match Self::normalise(rules, raw, direction, Field::Calling, trunk) {
            Ok(n) => n.number,
            Err(r) => {
                tracing::debug!(reason = %r.reason, "calling number left as received");
                raw.to_owned()
            }
        }
    }

    fn outbound(
        &mut self,
        now: Instant,
        called: &str,
        calling: &str,
        offered: &[Codec],
    ) -> Result<Outbound, RouteRefusal> {
        let rules = self.rules();
        let t = &self.topology;
        let called = Self::normalise(
            &rules,
            called,
            Direction::Outbound,
            Field::Called,
            &t.tpo_trunk,
        )?;
        let calling = Self::calling(&rules, calling, Direction::Outbound, &t.tpo_trunk);
        let trunk = t.carrier_trunk.clone();
        let plan = match self.admission.codec_plan(&trunk, offered) {
            Ok(plan) => plan,
            Err(p) => return Err(refusal(p)),
        };
        let _permit = self
            .admission
            .admit(&trunk, &called, now)
            .map_err(refusal)?;
        let t = &self.topology;
        let mut headers = Vec::new();
        if called.priority {
            headers.push(("Priority".to_owned(), "emergency".to_owned()));
        }
        tracing::info!(
            called = %called.number,
            class = called.class.as_deref().unwrap_or("-"),
            rules = %called.rules.join(","),
            version = rules.version(),
            "outbound call"
        );
        Ok(Outbound {
            destinations: vec![t.carrier],
            request_uri: format!("sip:{}@{}", called.number, t.carrier),
            forks: Vec::new(),
            taken_notice: None,
            from: format!("<sip:{calling}@{}>", t.local_host),
            to: format!("<sip:{}@{}>", called.number, t.carrier.ip()),
            headers,
            codecs: Some(plan.trunk_side),
            transcode: plan.transcode.map(|(from, to)| Transcode {
                a_side: law(from),
                b_side: law(to),
            }),
            label: trunk,
        })
    }

    fn inbound(
        &mut self,
        now: Instant,
        called: &str,
        calling: &str,
    ) -> Result<Outbound, RouteRefusal> {
        let rules = self.rules();
        let t = &self.topology;
        let trunk = t.carrier_trunk.clone();
        let called = Self::normalise(&rules, called, Direction::Inbound, Field::Called, &trunk)?;
        let calling = Self::calling(&rules, calling, Direction::Inbound, &trunk);
        let _permit = self.admission.admit_load(&trunk, now).map_err(refusal)?;
        let t = &self.topology;
        let first = t.tpos.first().copied().ok_or_else(|| RouteRefusal {
            status: 503,
            reason: "no TPO configured".into(),
            retry_after: Some(5),
        })?;
        tracing::info!(called = %called.number, calling = %calling, "inbound call");
        Ok(Outbound {
            destinations: t.tpos.clone(),
            request_uri: format!("sip:{}@{first}", called.number),
            forks: Vec::new(),
            taken_notice: None,
            from: format!("<sip:{calling}@{}>", t.local_host),
            to: format!("<sip:{}@{}>", called.number, first.ip()),
            headers: Vec::new(),
            codecs: None,
            transcode: None,
            label: trunk,
        })
    }
}

impl Router for SbcRouter {
    fn route(
        &mut self,
        now: Instant,
        source: SocketAddr,
        invite: &Request,
        offered: &[Codec],
    ) -> Result<Outbound, RouteRefusal> {
        let called = number_of(&invite.uri.to_string()).ok_or_else(|| RouteRefusal {
            status: 484,
            reason: "no number in the Request-URI".into(),
            retry_after: None,
        })?;
        let calling = from_number(invite).unwrap_or_else(|| "anonymous".into());
        let from_ip: IpAddr = source.ip();
        if from_ip == self.topology.carrier.ip() {
            self.inbound(now, &called, &calling)
        } else if self.topology.tpos.iter().any(|t| t.ip() == from_ip) {
            self.outbound(now, &called, &calling, offered)
        } else {
            // Toll fraud starts with strangers: only known peers may call through.
            Err(RouteRefusal {
                status: 403,
                reason: format!("{from_ip} is neither the carrier nor a TPO"),
                retry_after: None,
            })
        }
    }

    fn ended(&mut self, label: &str) {
        self.admission.release_trunk(label);
    }

    fn restored(&mut self, label: &str) {
        let _ = self.admission.count_restored(label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_out_of_sip_and_tel_uris() {
        assert_eq!(
            number_of("sip:0142685300@127.0.0.1:5060").as_deref(),
            Some("0142685300")
        );
        assert_eq!(
            number_of("sip:+33142685300;npdi@carrier").as_deref(),
            Some("+33142685300")
        );
        assert_eq!(
            number_of("tel:+33142685300;phone-context=x").as_deref(),
            Some("+33142685300")
        );
        assert_eq!(number_of("sip:carrier.example"), None);
        assert_eq!(number_of("http://x"), None);
    }
}
