//! The scenario language of `turret-sim run` (docs/scenarios.md): a YAML file naming
//! the turrets it uses and the steps to take, each a one-key map (`- call: {...}`).
//! This module reads and checks files; [`run`] carries them out against a lab,
//! [`report`] writes the results.

pub mod report;
pub mod run;
pub mod target;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The simulated turrets, by lab user name.
    #[serde(default)]
    pub turrets: BTreeMap<String, TurretSpec>,
    pub steps: Vec<Step>,
}

/// A turret's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurretSpec {
    /// The tone it sends in its calls, Hz (default: 300 + 100 × the user's number,
    /// trader01 400 Hz … trader20 2300 Hz).
    pub tone: Option<f64>,
    /// Answer every incoming call at once (default: only when a step says `answer`,
    /// or an intercom asks for it).
    #[serde(default)]
    pub auto_answer: bool,
}

/// One user or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn list(&self) -> Vec<String> {
        match self {
            Names::One(n) => vec![n.clone()],
            Names::Many(n) => n.clone(),
        }
    }
}

/// `call`: a turret dials a user's extension (`to`), a number, or seizes a line of
/// its own (`line`: a private wire rings its far end).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallStep {
    pub from: String,
    pub to: Option<String>,
    pub number: Option<String>,
    pub line: Option<String>,
    /// Wait for the call to be answered (default: no, only that it was sent).
    #[serde(default)]
    pub answered_within: Option<String>,
}

/// `inbound_call`: the carrier side calls a number (a DID) from `from`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundStep {
    pub from: String,
    pub to: String,
}

/// `expect_rang`: which turrets rang for the last call, and which did not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangStep {
    pub turrets: Vec<String>,
    #[serde(default)]
    pub not: Vec<String>,
    pub within: Option<String>,
}

/// `expect_state`: the state of a turret's latest call (`inbound` for the carrier's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateStep {
    pub turret: String,
    pub state: String,
    pub within: Option<String>,
}

/// `expect_tone`: what a turret hears in its current call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToneStep {
    pub turret: String,
    /// The tone expected, Hz; or the tone of the user named by `of`.
    pub hz: Option<f64>,
    pub of: Option<String>,
    pub within: Option<String>,
}

/// `send_tone`: a turret's call sends this tone from now on (0: silence).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendToneStep {
    pub turret: String,
    pub hz: f64,
}

/// `expect_media_gap`: over the next `over` (default 2 s), and since the turret's last
/// `expect_tone`, its call's media never stopped for `under` or more.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaGapStep {
    pub turret: String,
    pub under: String,
    pub over: Option<String>,
}

/// `expect_answered_by`: the caller's call was answered by this user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsweredByStep {
    pub turret: String,
    pub user: String,
}

/// `expect_message`: a turret was told something (who took a shared line).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageStep {
    pub turret: String,
    pub contains: String,
    pub within: Option<String>,
}

/// `expect_carrier`: the carrier received a call with these numbers (as the SBC
/// normalised them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierStep {
    pub called: String,
    pub calling: Option<String>,
    /// The call has ended at the carrier too (it received the BYE).
    #[serde(default)]
    pub ended: bool,
    pub within: Option<String>,
}

/// `expect_recordings`: the user's last call is recorded, complete, on each recorder
/// named, with each party's tone on its channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsStep {
    pub user: String,
    pub recorders: Vec<String>,
    /// The users whose tones the caller's and the callee's channels hold.
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub within: Option<String>,
}

/// `expect_call_record`: the TSS holds a record of the user's last call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRecordStep {
    pub user: String,
    pub outcome: Option<String>,
    pub direction: Option<String>,
    pub within: Option<String>,
}

/// `expect_registered`: a turret holds a registration (with a TPO other than `not`,
/// a lab service name), within the time given — measured from the last fault step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredStep {
    pub turret: String,
    pub not: Option<String>,
    pub within: Option<String>,
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// FTPES login and profile download (and the software it names).
    Login(Names),
    /// Log in if not yet, then register with the profile's first TPO.
    Register(Names),
    Call(CallStep),
    InboundCall(InboundStep),
    /// Answer the call ringing on this turret.
    Answer(String),
    /// Hang up this turret's current call (`inbound`: the carrier side's).
    Hangup(String),
    Hold(String),
    Resume(String),
    /// Change the tone a turret's call sends.
    SendTone(SendToneStep),
    /// Pause, e.g. `500ms`, `2s`.
    Wait(String),
    /// Stop a lab service (SIGTERM), kill it (SIGKILL), start it again.
    Stop(String),
    Kill(String),
    Start(String),
    ExpectRang(RangStep),
    ExpectState(StateStep),
    ExpectTone(ToneStep),
    ExpectMediaGap(MediaGapStep),
    ExpectAnsweredBy(AnsweredByStep),
    ExpectMessage(MessageStep),
    ExpectCarrier(CarrierStep),
    ExpectRecordings(RecordingsStep),
    ExpectCallRecord(CallRecordStep),
    ExpectRegistered(RegisteredStep),
}

impl Step {
    /// The step as one line, for progress and reports.
    pub fn describe(&self) -> String {
        match self {
            Step::Login(n) => format!("login {}", n.list().join(", ")),
            Step::Register(n) => format!("register {}", n.list().join(", ")),
            Step::Call(c) => format!(
                "call from {} to {}",
                c.from,
                c.to.as_ref()
                    .map(|t| format!("user {t}"))
                    .or_else(|| c.number.clone())
                    .or_else(|| c.line.as_ref().map(|l| format!("line {l}")))
                    .unwrap_or_default()
            ),
            Step::InboundCall(c) => format!("inbound call from {} to {}", c.from, c.to),
            Step::Answer(t) => format!("answer on {t}"),
            Step::Hangup(t) => format!("hang up {t}"),
            Step::Hold(t) => format!("hold on {t}"),
            Step::Resume(t) => format!("resume on {t}"),
            Step::SendTone(t) => format!("{} sends {} Hz", t.turret, t.hz),
            Step::Wait(d) => format!("wait {d}"),
            Step::Stop(s) => format!("stop {s}"),
            Step::Kill(s) => format!("kill {s}"),
            Step::Start(s) => format!("start {s}"),
            Step::ExpectRang(r) => {
                let mut text = format!("expect {} rang", r.turrets.join(", "));
                if !r.not.is_empty() {
                    text.push_str(&format!(", not {}", r.not.join(", ")));
                }
                text
            }
            Step::ExpectState(s) => format!("expect {} {}", s.turret, s.state),
            Step::ExpectTone(t) => format!(
                "expect {} to hear {}",
                t.turret,
                t.of.clone()
                    .map(|o| format!("{o}'s tone"))
                    .or_else(|| t.hz.map(|h| format!("{h} Hz")))
                    .unwrap_or_default()
            ),
            Step::ExpectMediaGap(g) => {
                format!("expect {}'s media gaps under {}", g.turret, g.under)
            }
            Step::ExpectAnsweredBy(a) => {
                format!("expect {}'s call answered by {}", a.turret, a.user)
            }
            Step::ExpectMessage(m) => format!("expect {} told {:?}", m.turret, m.contains),
            Step::ExpectCarrier(c) => format!("expect the carrier called {}", c.called),
            Step::ExpectRecordings(r) => {
                format!(
                    "expect {}'s call recorded on {}",
                    r.user,
                    r.recorders.join(", ")
                )
            }
            Step::ExpectCallRecord(c) => format!("expect a call record for {}", c.user),
            Step::ExpectRegistered(r) => format!(
                "expect {} registered{}",
                r.turret,
                r.not
                    .as_ref()
                    .map(|n| format!(" elsewhere than {n}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// The turrets the step drives or looks at.
    fn turrets(&self) -> Vec<String> {
        match self {
            Step::Login(n) | Step::Register(n) => n.list(),
            Step::Call(c) => vec![c.from.clone()],
            Step::Answer(t) | Step::Hold(t) | Step::Resume(t) => vec![t.clone()],
            Step::SendTone(t) => vec![t.turret.clone()],
            Step::Hangup(t) if t != run::INBOUND => vec![t.clone()],
            Step::ExpectRang(r) => r.turrets.iter().chain(&r.not).cloned().collect(),
            Step::ExpectState(s) if s.turret != run::INBOUND => vec![s.turret.clone()],
            Step::ExpectTone(t) if t.turret != run::INBOUND => vec![t.turret.clone()],
            Step::ExpectAnsweredBy(a) => vec![a.turret.clone()],
            Step::ExpectMediaGap(g) if g.turret != run::INBOUND => vec![g.turret.clone()],
            Step::ExpectMessage(m) => vec![m.turret.clone()],
            Step::ExpectRegistered(r) => vec![r.turret.clone()],
            _ => Vec::new(),
        }
    }

    /// Durations the step gives, checked at load time.
    fn durations(&self) -> Vec<&str> {
        if let Step::ExpectMediaGap(g) = self {
            return std::iter::once(g.under.as_str())
                .chain(g.over.as_deref())
                .collect();
        }
        let within = match self {
            Step::Wait(d) => Some(d),
            Step::Call(c) => c.answered_within.as_ref(),
            Step::ExpectRang(s) => s.within.as_ref(),
            Step::ExpectState(s) => s.within.as_ref(),
            Step::ExpectTone(s) => s.within.as_ref(),
            Step::ExpectMessage(s) => s.within.as_ref(),
            Step::ExpectCarrier(s) => s.within.as_ref(),
            Step::ExpectRecordings(s) => s.within.as_ref(),
            Step::ExpectCallRecord(s) => s.within.as_ref(),
            Step::ExpectRegistered(s) => s.within.as_ref(),
            _ => None,
        };
        within.map(String::as_str).into_iter().collect()
    }
}

/// A duration as scenarios write it (`500ms`, `2s`, `1m`).
pub fn duration(text: &str) -> Result<Duration, Error> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        Error::Scenario(format!(
            "{text:?} is not a duration such as 500ms or 2s ({e})"
        ))
    })
}

/// Reads and checks a scenario from YAML text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Scenario, Error> {
    let scenario: Scenario =
        serde_saphyr::from_str(text).map_err(|e| Error::Scenario(format!("{origin}: {e}")))?;
    check(&scenario).map_err(|e| Error::Scenario(format!("{origin}: {e}")))?;
    Ok(scenario)
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Scenario(format!("{}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

/// Every turret a step names is declared; every duration reads; calls say where to.
fn check(scenario: &Scenario) -> Result<(), String> {
    if scenario.steps.is_empty() {
        return Err("steps: a scenario needs at least one step".into());
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        let at = format!("steps[{i}] ({})", step.describe());
        for t in step.turrets() {
            if !scenario.turrets.contains_key(&t) {
                return Err(format!("{at}: turret {t:?} is not declared under turrets"));
            }
        }
        for d in step.durations() {
            duration(d).map_err(|e| format!("{at}: {e}"))?;
        }
        if let Step::Call(c) = step {
            let targets = [&c.to, &c.number, &c.line]
                .iter()
                .filter(|t| t.is_some())
                .count();
            if targets != 1 {
                return Err(format!("{at}: give exactly one of to, number, line"));
            }
        }
        if let Step::ExpectTone(t) = step
            && t.hz.is_some() == t.of.is_some()
        {
            return Err(format!("{at}: give exactly one of hz, of"));
        }
        if let Step::ExpectState(s) = step
            && !run::STATES.contains(&s.state.as_str())
        {
            return Err(format!(
                "{at}: state {:?} is not one of {}",
                s.state,
                run::STATES.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERNAL: &str = r#"
name: internal call
turrets:
  trader01: {}
  trader11: {tone: 1400}
steps:
  - register: [trader01, trader11]
  - call: {from: trader01, to: trader11}
  - expect_rang: {turrets: [trader11]}
  - answer: trader11
  - expect_tone: {turret: trader01, of: trader11, within: 2s}
  - hangup: trader01
  - wait: 200ms
"#;

    #[test]
    fn reads_a_scenario() {
        let s = parse(INTERNAL, "internal.yaml").expect("scenario");
        assert_eq!(s.name, "internal call");
        assert_eq!(s.turrets["trader11"].tone, Some(1400.0));
        assert_eq!(s.steps.len(), 7);
        assert!(matches!(&s.steps[0], Step::Register(Names::Many(n)) if n.len() == 2));
        assert!(matches!(&s.steps[3], Step::Answer(t) if t == "trader11"));
        assert_eq!(s.steps[1].describe(), "call from trader01 to user trader11");
    }

    #[test]
    fn refuses_bad_files_naming_the_step() {
        let undeclared = INTERNAL.replace("answer: trader11", "answer: trader12");
        let e = parse(&undeclared, "x.yaml").expect_err("undeclared turret");
        assert!(e.to_string().contains("steps[3]"), "{e}");
        assert!(e.to_string().contains("trader12"), "{e}");
        let bad_wait = INTERNAL.replace("wait: 200ms", "wait: soon");
        let e = parse(&bad_wait, "x.yaml").expect_err("bad duration");
        assert!(e.to_string().contains("steps[6]"), "{e}");
        let unknown = INTERNAL.replace("hangup: trader01", "hang_up: trader01");
        let e = parse(&unknown, "x.yaml").expect_err("unknown step");
        assert!(e.to_string().contains("hang_up"), "{e}");
        let two = INTERNAL.replace("to: trader11}", "to: trader11, number: \"7111\"}");
        assert!(parse(&two, "x.yaml").is_err());
        assert!(parse("name: x\nsteps: []\n", "x.yaml").is_err());
    }
}
