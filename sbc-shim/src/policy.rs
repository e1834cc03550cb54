//! Trunk policy (sans-IO): which destinations a trunk may call, how many calls and how
//! fast, and which codecs — with G.711 A-law↔µ-law transcoding when the two sides
//! share no codec.
//!
//! Emergency numbers (class `emergency` or `priority`) always pass: they bypass the
//! destination lists and the rate and concurrency limits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use floorwire::sdp::Codec;
use serde::Deserialize;

use crate::normalise::Normalised;

/// One trunk's policy as configured (`[[trunk]]` in the SBC config).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrunkPolicy {
    /// Trunk name, as the normalisation rules see it.
    pub name: String,
    /// Calls up at once on this trunk; further calls get 503.
    #[serde(default = "default_concurrent")]
    pub max_concurrent_calls: u32,
    /// New calls per second (token bucket, burst of one second's worth).
    #[serde(default = "default_rate")]
    pub max_calls_per_second: u32,
    /// Codecs allowed towards this trunk, in preference order.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<CodecName>,
    /// Number classes refused (e.g. `premium`).
    #[serde(default)]
    pub blocked_classes: Vec<String>,
    /// E.164 prefixes refused (toll fraud: premium, satellite, high-cost ranges).
    #[serde(default)]
    pub blocked_prefixes: Vec<String>,
    /// When not empty, only these E.164 prefixes may be called (short codes of an
    /// accepted class still pass).
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
}

fn default_concurrent() -> u32 {
    1000
}
fn default_rate() -> u32 {
    50
}
fn default_codecs() -> Vec<CodecName> {
    vec![CodecName::Pcma, CodecName::Pcmu, CodecName::TelephoneEvent]
}

/// Codec names as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CodecName {
    #[serde(rename = "PCMA")]
    Pcma,
    #[serde(rename = "PCMU")]
    Pcmu,
    #[serde(rename = "G722")]
    G722,
    #[serde(rename = "telephone-event")]
    TelephoneEvent,
}

impl From<CodecName> for Codec {
    fn from(c: CodecName) -> Self {
        match c {
            CodecName::Pcma => Codec::Pcma,
            CodecName::Pcmu => Codec::Pcmu,
            CodecName::G722 => Codec::G722,
            CodecName::TelephoneEvent => Codec::TelephoneEvent,
        }
    }
}

/// Why a call is refused, with the SIP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRefusal {
    pub status: u16,
    pub reason: String,
    /// Seconds for Retry-After (load refusals only).
    pub retry_after: Option<u32>,
}

/// What to do with media for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecPlan {
    /// Codecs to offer the trunk, in order.
    pub trunk_side: Vec<Codec>,
    /// A-law↔µ-law conversion when the offer and the trunk share no voice codec:
    /// (codec the caller sends, codec the trunk gets).
    pub transcode: Option<(Codec, Codec)>,
}

/// Live state of one trunk: concurrent calls and the rate bucket.
#[derive(Debug, Clone)]
struct TrunkState {
    policy: TrunkPolicy,
    active: u32,
    tokens: f64,
    refilled: Option<Instant>,
}

/// Admission control over every trunk.
#[derive(Debug, Default)]
pub struct Admission {
    trunks: HashMap<String, TrunkState>,
}

/// Proof that a call was admitted; give it back with [`Admission::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be released when the call ends"]
pub struct Permit {
    trunk: String,
    counted: bool,
}

fn is_emergency(called: &Normalised) -> bool {
    called.priority || called.class.as_deref() == Some("emergency")
}

impl Admission {
    /// Admission over `trunks`.
    pub fn new(trunks: Vec<TrunkPolicy>) -> Self {
        Self {
            trunks: trunks
                .into_iter()
                .map(|policy| {
                    let tokens = policy.max_calls_per_second as f64;
                    (
                        policy.name.clone(),
                        TrunkState {
                            policy,
                            active: 0,
                            tokens,
                            refilled: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Calls up on `trunk`.
    pub fn active(&self, trunk: &str) -> u32 {
        self.trunks.get(trunk).map_or(0, |t| t.active)
    }

    /// Admits a call to `called` on `trunk` at `now`, or says why not: 403 for a
    /// refused destination, 503 + Retry-After for load, 404 for an unknown trunk.
    pub fn admit(
        &mut self,
        trunk: &str,
        called: &Normalised,
        now: Instant,
    ) -> Result<Permit, PolicyRefusal> {
        let Some(state) = self.trunks.get_mut(trunk) else {
            return Err(PolicyRefusal {
                status: 404,
                reason: format!("no trunk {trunk:?}"),
                retry_after: None,
            });
        };
        if is_emergency(called) {
            // Emergency calls are never refused by policy, and counted so that their
            // release balances.
            state.active += 1;
            return Ok(Permit {
                trunk: trunk.to_owned(),
                counted: true,
            });
        }
        let p = &state.policy;
        let forbidden = |reason: String| PolicyRefusal {
            status: 403,
            reason,
            retry_after: None,
        };
        if let Some(class) = &called.class
            && p.blocked_classes.iter().any(|c| c == class)
        {
            return Err(forbidden(format!("{class} numbers are blocked on {trunk}")));
        }
        if let Some(prefix) = p
            .blocked_prefixes
            .iter()
            .find(|b| called.number.starts_with(b.as_str()))
        {
            return Err(forbidden(format!(
                "destination {prefix}… is blocked on {trunk}"
            )));
        }
        if called.number.starts_with('+')
            && !p.allowed_prefixes.is_empty()
            && !p
                .allowed_prefixes
                .iter()
                .any(|a| called.number.starts_with(a.as_str()))
        {
            return Err(forbidden(format!(
                "{} is not an allowed destination on {trunk}",
                called.number
            )));
        }
        take_load(state, trunk, now)?;
        Ok(Permit {
            trunk: trunk.to_owned(),
            counted: true,
        })
    }

    /// Admits a call on `trunk` by load alone (concurrency and rate): calls from the
    /// carrier towards the floor, whose destination is ours.
    pub fn admit_load(&mut self, trunk: &str, now: Instant) -> Result<Permit, PolicyRefusal> {
        let Some(state) = self.trunks.get_mut(trunk) else {
            return Err(PolicyRefusal {
                status: 404,
                reason: format!("no trunk {trunk:?}"),
                retry_after: None,
            });
        };
        take_load(state, trunk, now)?;
        Ok(Permit {
            trunk: trunk.to_owned(),
            counted: true,
        })
    }

    /// Counts a call taken over from the active of an HA pair (already admitted there).
    pub fn count_restored(&mut self, trunk: &str) -> Permit {
        if let Some(state) = self.trunks.get_mut(trunk) {
            state.active += 1;
        }
        Permit {
            trunk: trunk.to_owned(),
            counted: true,
        }
    }

    /// Ends a call admitted on `trunk` (the B2BUA keeps the trunk name, not the permit).
    pub fn release_trunk(&mut self, trunk: &str) {
        self.release(Permit {
            trunk: trunk.to_owned(),
            counted: true,
        });
    }

    /// Ends an admitted call.
    pub fn release(&mut self, permit: Permit) {
        if let (true, Some(state)) = (permit.counted, self.trunks.get_mut(&permit.trunk)) {
            state.active = state.active.saturating_sub(1);
        }
    }

    /// Chooses the codecs towards `trunk` for a caller offering `offered` (voice and
    /// events, in the caller's order): the trunk's allow-list order among what both
    /// have; else A-law↔µ-law transcoding when one side has only the other; else 488.
    pub fn codec_plan(&self, trunk: &str, offered: &[Codec]) -> Result<CodecPlan, PolicyRefusal> {
        let not_acceptable = |reason: String| PolicyRefusal {
            status: 488,
            reason,
            retry_after: None,
        };
        let state = self
            .trunks
            .get(trunk)
            .ok_or_else(|| not_acceptable(format!("no trunk {trunk:?}")))?;
        let allowed: Vec<Codec> = state
            .policy
            .codecs
            .iter()
            .map(|&c| Codec::from(c))
            .collect();
        let common: Vec<Codec> = allowed
            .iter()
            .copied()
            .filter(|c| offered.contains(c))
            .collect();
        let events = common.contains(&Codec::TelephoneEvent);
        if common.iter().any(|c| *c != Codec::TelephoneEvent) {
            return Ok(CodecPlan {
                trunk_side: common,
                transcode: None,
            });
        }
        let pairs = [(Codec::Pcma, Codec::Pcmu), (Codec::Pcmu, Codec::Pcma)];
        for (from, to) in pairs {
            if offered.contains(&from) && allowed.contains(&to) {
                let mut trunk_side = vec![to];
                if events {
                    trunk_side.push(Codec::TelephoneEvent);
                }
                return Ok(CodecPlan {
                    trunk_side,
                    transcode: Some((from, to)),
                });
            }
        }
        Err(not_acceptable(format!(
            "no codec in common with {trunk} and no transcoding path"
        )))
    }
}

/// Takes one call's worth of a trunk's load allowance: concurrency, then the rate
/// bucket (refilled at the rate, capped at one second's worth).
fn take_load(state: &mut TrunkState, trunk: &str, now: Instant) -> Result<(), PolicyRefusal> {
    if state.active >= state.policy.max_concurrent_calls {
        return Err(PolicyRefusal {
            status: 503,
            reason: format!("{trunk}: {} calls up, the limit", state.active),
            retry_after: Some(5),
        });
    }
    // Token bucket: refill at the rate, capped at one second's worth.
    let rate = state.policy.max_calls_per_second as f64;
    if let Some(last) = state.refilled {
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(rate);
    }
    state.refilled = Some(now);
    if state.tokens < 1.0 {
        let wait = ((1.0 - state.tokens) / rate.max(f64::MIN_POSITIVE)).ceil();
        return Err(PolicyRefusal {
            status: 503,
            reason: format!(
                "{trunk}: more than {} new calls per second",
                state.policy.max_calls_per_second
            ),
            retry_after: Some(Duration::from_secs_f64(wait.clamp(1.0, 3600.0)).as_secs() as u32),
        });
    }
    state.tokens -= 1.0;
    state.active += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn called(number: &str, class: &str) -> Normalised {
        Normalised {
            number: number.into(),
            class: Some(class.into()),
            priority: class == "emergency",
            rules: vec![],
        }
    }

    fn trunk(toml_text: &str) -> TrunkPolicy {
        toml::from_str(toml_text).expect("policy")
    }

    #[test]
    fn destinations_blocked_by_class_prefix_and_allow_list() {
        let mut a = Admission::new(vec![trunk(
            "name = \"carrier\"\nblocked_classes = [\"premium\"]\nblocked_prefixes = [\"+882\"]\nallowed_prefixes = [\"+33\", \"+44\"]\n",
        )]);
        let now = Instant::now();
        assert_eq!(
            a.admit("carrier", &called("+33891123456", "premium"), now)
                .map_err(|e| e.status),
            Err(403)
        );
        assert_eq!(
            a.admit("carrier", &called("+88212345678", "international"), now)
                .map_err(|e| e.status),
            Err(403)
        );
        assert_eq!(
            a.admit("carrier", &called("+12125550100", "international"), now)
                .map_err(|e| e.status),
            Err(403)
        );
        let ok = a
            .admit("carrier", &called("+441234567890", "international"), now)
            .expect("allowed");
        a.release(ok);
        assert_eq!(
            a.admit("nowhere", &called("+33142685300", "national"), now)
                .map_err(|e| e.status),
            Err(404)
        );
    }

    #[test]
    fn concurrency_and_rate_limits_spare_emergency_calls() {
        let mut a = Admission::new(vec![trunk(
            "name = \"t\"\nmax_concurrent_calls = 2\nmax_calls_per_second = 100\n",
        )]);
        let t0 = Instant::now();
        let p1 = a
            .admit("t", &called("+33142685300", "national"), t0)
            .expect("1");
        let _p2 = a
            .admit("t", &called("+33142685301", "national"), t0)
            .expect("2");
        let full = a
            .admit("t", &called("+33142685302", "national"), t0)
            .expect_err("full");
        assert_eq!((full.status, full.retry_after), (503, Some(5)));
        let sos = a
            .admit("t", &called("112", "emergency"), t0)
            .expect("emergency always passes");
        assert_eq!(a.active("t"), 3);
        a.release(p1);
        a.release(sos);
        assert!(
            a.admit("t", &called("+33142685303", "national"), t0)
                .is_ok()
        );

        let mut a = Admission::new(vec![trunk("name = \"t\"\nmax_calls_per_second = 2\n")]);
        let mut admitted = 0;
        for i in 0..10 {
            if let Ok(p) = a.admit(
                "t",
                &called("+33142685300", "national"),
                t0 + Duration::from_millis(i),
            ) {
                admitted += 1;
                a.release(p);
            }
        }
        assert_eq!(admitted, 2, "burst of one second's worth");
        // A second later the bucket is full again.
        assert!(
            a.admit(
                "t",
                &called("+33142685300", "national"),
                t0 + Duration::from_secs(1)
            )
            .is_ok()
        );
    }

    #[test]
    fn codec_plans() {
        let a = Admission::new(vec![
            trunk("name = \"alaw\"\ncodecs = [\"PCMA\", \"telephone-event\"]\n"),
            trunk("name = \"pref\"\ncodecs = [\"PCMU\", \"PCMA\"]\n"),
            trunk("name = \"g722\"\ncodecs = [\"G722\"]\n"),
        ]);
        let plan = a
            .codec_plan("pref", &[Codec::Pcma, Codec::Pcmu])
            .expect("plan");
        assert_eq!(
            plan.trunk_side,
            vec![Codec::Pcmu, Codec::Pcma],
            "trunk's preference order"
        );
        let plan = a
            .codec_plan("alaw", &[Codec::Pcmu, Codec::TelephoneEvent])
            .expect("plan");
        assert_eq!(plan.transcode, Some((Codec::Pcmu, Codec::Pcma)));
        assert_eq!(plan.trunk_side, vec![Codec::Pcma, Codec::TelephoneEvent]);
        assert_eq!(
            a.codec_plan("g722", &[Codec::Pcma]).map_err(|e| e.status),
            Err(488)
        );
        assert!(toml::from_str::<TrunkPolicy>("name = \"x\"\ncodecs = [\"OPUS\"]\n").is_err());
    }
}
