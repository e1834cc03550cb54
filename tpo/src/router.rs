//! Where the TPO sends a new call (the B2BUA's [`Router`]): the dialled number is
//! looked up in the dial plan from the TSS (longest prefix wins); an internal number is
//! a line, and the call goes to the registered devices of the users it appears on
//! (tried in turn); an external one goes to the SBC. Calls come from registered
//! turrets, or from the SBC (inbound: the number is a line). Anyone else gets 403.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use floorwire::sdp::Codec;
use floorwire::sip::b2bua::{Outbound, RouteRefusal, Router};
use floorwire::sip::msg::{Header, Request};
use floorwire::sip::syntax::parse_name_addr;

use crate::registrar::Registrar;
use crate::tss_client::{self, Shared, TpoConfig};

/// How a dialled number is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Internal,
    Sbc,
    Refuse,
}

/// The route for `number`: the longest matching prefix of the dial plan; numbers no
/// rule matches are internal.
pub fn dial_plan_route(config: &TpoConfig, number: &str) -> Route {
    config
        .dial_plan
        .iter()
        .filter(|r| number.starts_with(r.prefix.as_str()))
        .max_by_key(|r| r.prefix.len())
        .map(|r| match r.route.as_str() {
            "sbc" => Route::Sbc,
            "refuse" => Route::Refuse,
            _ => Route::Internal,
        })
        .unwrap_or(Route::Internal)
}

/// The user part of a SIP URI's text.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_part_of_uris() {
        assert_eq!(uri_user("sip:dev-T-0001@floorwire"), Some("dev-T-0001"));
        assert_eq!(uri_user("sips:a;x=y@h:5061"), Some("a"));
        assert_eq!(uri_user("sip:floorwire"), None);
        assert_eq!(uri_user("sip:@h"), None);
    }

    #[test]
    fn the_longest_prefix_routes() {
        let config: TpoConfig = serde_json::from_value(serde_json::json!({
            "revision": 1, "devices": [], "lines": [], "appearances": [],
            "dial_plan": [
                {"prefix": "7", "route": "internal"},
                {"prefix": "0", "route": "sbc"},
                {"prefix": "08", "route": "refuse"},
                {"prefix": "+", "route": "sbc"}
            ]
        }))
        .unwrap();
        assert_eq!(dial_plan_route(&config, "7002"), Route::Internal);
        assert_eq!(dial_plan_route(&config, "0142685300"), Route::Sbc);
        assert_eq!(dial_plan_route(&config, "0899123456"), Route::Refuse);
        assert_eq!(dial_plan_route(&config, "+441234"), Route::Sbc);
        assert_eq!(dial_plan_route(&config, "5555"), Route::Internal);
    }
}

fn refuse(status: u16, reason: impl Into<String>) -> RouteRefusal {
    RouteRefusal {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

/// The TPO's router.
#[derive(Debug)]
pub struct TpoRouter {
    pub registrar: Arc<Mutex<Registrar>>,
    pub config: Shared,
    /// The SBC: where external calls go, and whose calls are inbound.
    pub sbc: Option<SocketAddr>,
    /// Our address, for From/To hosts on leg B.
    pub local: SocketAddr,
}

impl Router for TpoRouter {
    fn route(
        &mut self,
        now: Instant,
        source: SocketAddr,
        invite: &Request,
        _offered: &[Codec],
    ) -> Result<Outbound, RouteRefusal> {
        let config = tss_client::current(&self.config).ok_or_else(|| RouteRefusal {
            status: 503,
            reason: "no configuration from the TSS yet".into(),
            retry_after: Some(5),
        })?;
        let uri = invite.uri.to_string();
        let number = uri_user(&uri)
            .ok_or_else(|| refuse(484, "no number in the Request-URI"))?
            .to_owned();
        let registrar = self
            .registrar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inbound = self.sbc.is_some_and(|s| s.ip() == source.ip());
        let caller = if inbound {
            None
        } else {
            Some(
                registrar
                    .device_at(now, source)
                    .ok_or_else(|| refuse(403, format!("{source} is not a registered turret")))?
                    .to_owned(),
            )
        };
        let calling = invite
            .headers
            .iter()
            .find_map(|h| match h {
                Header::From(f) => parse_name_addr(f.value())
                    .ok()
                    .and_then(|a| uri_user(a.uri).map(str::to_owned)),
                _ => None,
            })
            .unwrap_or_else(|| "anonymous".into());
        let route = if inbound {
            Route::Internal
        } else {
            dial_plan_route(&config, &number)
        };
        let host = self.local.ip();
        match route {
            Route::Refuse => Err(refuse(403, format!("{number} is refused by the dial plan"))),
            Route::Sbc => {
                let sbc = self.sbc.ok_or_else(|| refuse(503, "no SBC configured"))?;
                Ok(Outbound {
                    destinations: vec![sbc],
                    request_uri: format!("sip:{number}@{sbc}"),
                    forks: Vec::new(),
                    taken_notice: None,
                    from: format!("<sip:{calling}@{host}>"),
                    to: format!("<sip:{number}@{}>", sbc.ip()),
                    headers: Vec::new(),
                    codecs: None,
                    transcode: None,
                    label: "external".into(),
                })
            }
            Route::Internal => {
                let lines: Vec<&str> = config
                    .lines
                    .iter()
                    .filter(|l| l.number == number)
                    .map(|l| l.id.as_str())
                    .collect();
                if lines.is_empty() {
                    return Err(refuse(404, format!("no line {number}")));
                }
                let mut targets = Vec::new();
                for appearance in config
                    .appearances
                    .iter()
                    .filter(|a| lines.contains(&a.line.as_str()))
                {
                    for device in config.devices.iter().filter(|d| d.user == appearance.user) {
                        if caller.as_deref() == Some(device.username.as_str()) {
                            continue;
                        }
                        for binding in registrar.lookup(now, &device.username) {
                            if !targets.iter().any(|(s, _)| *s == binding.source) {
                                targets.push((binding.source, binding.contact.clone()));
                            }
                        }
                    }
                }
                let Some((_, contact)) = targets.first().cloned() else {
                    return Err(refuse(
                        480,
                        format!("no turret with line {number} is registered"),
                    ));
                };
                Ok(Outbound {
                    destinations: targets.iter().map(|(s, _)| *s).collect(),
                    request_uri: contact,
                    forks: Vec::new(),
                    taken_notice: None,
                    from: format!("<sip:{calling}@{host}>"),
                    to: format!("<sip:{number}@{host}>"),
                    headers: Vec::new(),
                    codecs: None,
                    transcode: None,
                    label: if inbound {
                        "inbound".into()
                    } else {
                        "internal".into()
                    },
                })
            }
        }
    }

    fn ended(&mut self, _label: &str) {}
}
