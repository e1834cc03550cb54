//! Carrying a scenario out against a lab: simulated turrets log in and register, the
//! steps run in order, the first failing step ends the scenario (the rest are
//! skipped), and whatever the scenario stopped in the lab is started again at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use floorwire::rtp::tone::detect_tone;
use serde::Serialize;
use serde_json::Value;

use super::target::Target;
use super::{Scenario, Step, duration};
use crate::Error;
use crate::https::Client;
use crate::turret::login::{LoggedIn, login};
use crate::turret::media::MediaLeg;
use crate::turret::{CallState, CallView, Turret, UaConfig};

/// The name steps use for the carrier side's call (`hangup: inbound`).
pub const INBOUND: &str = "inbound";
/// Call states `expect_state` knows.
pub const STATES: [&str; 5] = ["dialling", "ringing", "up", "held", "ended"];

/// Default bound of an expectation.
const EXPECT_WITHIN: Duration = Duration::from_secs(5);

/// How one step went.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub index: usize,
    pub step: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: &'static str,
    pub millis: u64,
    /// What was measured, or why it failed.
    pub detail: Option<String>,
}

/// How a scenario went.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    pub passed: bool,
    pub millis: u64,
    pub steps: Vec<StepResult>,
}

struct Runner<'a> {
    target: &'a Target,
    scenario: &'a Scenario,
    logins: BTreeMap<String, LoggedIn>,
    turrets: BTreeMap<String, Turret>,
    /// Each turret's call the steps act on.
    calls: BTreeMap<String, u64>,
    /// The highest call id of each turret when the last call was placed.
    marks: BTreeMap<String, u64>,
    inbound: Option<(Turret, u64)>,
    /// Tones changed by `send_tone`.
    tones: BTreeMap<String, f64>,
    last_fault: Option<Instant>,
    /// When the last call step placed its call: what expectations on the carrier,
    /// the recorders and the call records look after.
    last_call_at: SystemTime,
    stopped: BTreeSet<String>,
}

fn fail(text: impl Into<String>) -> Error {
    Error::Scenario(text.into())
}

/// The digits at the end of a user name (`trader07` → 7).
fn user_number(user: &str) -> Option<u8> {
    let digits: String = user
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

fn turret_in<'t>(turrets: &'t BTreeMap<String, Turret>, name: &str) -> Result<&'t Turret, Error> {
    turrets
        .get(name)
        .ok_or_else(|| fail(format!("{name} has not registered (add a register step)")))
}

/// Logs a lab user's turret in over FTPES: at tss-1, else at tss-2.
pub async fn login_lab_user(target: &Target, user: &str) -> Result<LoggedIn, Error> {
    let lab_user = target.user(user)?;
    let mut last = None;
    for tss in ["tss-1", "tss-2"] {
        let Ok(ftpes) = target.endpoint(tss, "ftpes") else {
            continue;
        };
        match login(
            ftpes,
            &target.ca_file,
            user,
            &lab_user.password,
            &lab_user.device_id,
        )
        .await
        {
            Ok(logged) => return Ok(logged),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| fail("the lab lists no TSS with FTPES")))
}

/// Starts the simulated turret of a logged-in user on `127.0.10.N:5060` (N the
/// user's number), not registered yet.
pub async fn start_turret(
    logged: &LoggedIn,
    user: &str,
    tone_hz: f64,
    auto_answer: bool,
) -> Result<Turret, Error> {
    let n = user_number(user).unwrap_or(200);
    let config = UaConfig {
        username: logged.credential.username.clone(),
        password: logged.credential.password.clone(),
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 10, n)), 5060),
        registrars: logged.tpos.clone(),
        expires: 60,
        keepalive: Duration::from_millis(300),
        dead_after: Duration::from_millis(1000),
        tone_hz,
        auto_answer,
    };
    Turret::start(user, config).await
}

/// The default tone of a user: 300 Hz + 100 Hz × their number.
pub fn default_tone(user: &str) -> f64 {
    300.0 + 100.0 * f64::from(user_number(user).unwrap_or(1))
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Polls `check` every 50 ms until it gives a value, at most `within`.
async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    let deadline = Instant::now() + within;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "{what}: not within {} ms{}",
                within.as_millis(),
                last_error
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `audio` (leading silence dropped) holds at least 1 s of `hz`.
fn has_tone(audio: &[i16], hz: f64) -> bool {
    let start = audio.iter().position(|s| *s != 0).unwrap_or(audio.len());
    let heard = &audio[start..];
    heard.len() >= 8000 && detect_tone(heard, hz)
}

impl<'a> Runner<'a> {
    fn within(text: &Option<String>, default: Duration) -> Duration {
        text.as_deref()
            .and_then(|t| duration(t).ok())
            .unwrap_or(default)
    }

    fn tone_of(&self, user: &str) -> f64 {
        if let Some(hz) = self.tones.get(user) {
            return *hz;
        }
        self.scenario
            .turrets
            .get(user)
            .and_then(|t| t.tone)
            .unwrap_or_else(|| default_tone(user))
    }

    fn turret(&self, name: &str) -> Result<&Turret, Error> {
        turret_in(&self.turrets, name)
    }

    /// The turret's call the steps act on, else its latest.
    fn call_of(&self, name: &str) -> Result<CallView, Error> {
        let turret = self.turret(name)?;
        let view = turret.view();
        let wanted = self.calls.get(name).copied();
        view.calls
            .iter()
            .rev()
            .find(|c| wanted.is_none_or(|w| c.id == w))
            .cloned()
            .ok_or_else(|| fail(format!("{name} has no call")))
    }

    /// The media of a turret's call (`inbound`: the carrier side's).
    fn media_of(&self, turret: &str) -> Result<MediaLeg, Error> {
        let media = if turret == INBOUND {
            let (ua, call) = self
                .inbound
                .as_ref()
                .ok_or_else(|| fail("no inbound call"))?;
            ua.media(*call)
        } else {
            let call = self.call_of(turret)?;
            self.turret(turret)?.media(call.id)
        };
        media.ok_or_else(|| fail(format!("{turret}: the call has no media")))
    }

    async fn login(&mut self, user: &str) -> Result<(), Error> {
        if self.logins.contains_key(user) {
            return Ok(());
        }
        let logged = login_lab_user(self.target, user).await?;
        self.logins.insert(user.to_owned(), logged);
        Ok(())
    }

    async fn register(&mut self, users: &[String]) -> Result<Option<String>, Error> {
        // A turret registered already must register again, not merely be registered.
        let before: BTreeMap<String, u64> = users
            .iter()
            .filter_map(|u| Some((u.clone(), self.turrets.get(u)?.view().registrations)))
            .collect();
        for user in users {
            self.login(user).await?;
            if self.turrets.contains_key(user) {
                self.turret(user)?.register()?;
                continue;
            }
            let auto_answer = self
                .scenario
                .turrets
                .get(user)
                .is_some_and(|t| t.auto_answer);
            let turret =
                start_turret(&self.logins[user], user, self.tone_of(user), auto_answer).await?;
            turret.register()?;
            self.turrets.insert(user.clone(), turret);
        }
        let started = Instant::now();
        for user in users {
            let earlier = before.get(user).copied().unwrap_or(0);
            self.turret(user)?
                .wait_for("registered", Duration::from_secs(10), |v| {
                    v.registered_to.is_some() && v.registrations > earlier
                })
                .await?;
        }
        Ok(Some(format!(
            "registered in {} ms",
            started.elapsed().as_millis()
        )))
    }

    fn mark_calls(&mut self) {
        // A second back: the lab's clocks are one machine's, but the services stamp
        // times as they see them.
        self.last_call_at = SystemTime::now() - Duration::from_secs(1);
        self.marks = self
            .turrets
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.view().calls.iter().map(|c| c.id).max().unwrap_or(0),
                )
            })
            .collect();
    }

    async fn control(&mut self, action: &str, service: &str) -> Result<Option<String>, Error> {
        if self.target.kind(service).is_none() {
            return Err(fail(format!("the lab has no service {service}")));
        }
        let path = match action {
            "kill" => format!("/services/{service}/stop?kill=true"),
            _ => format!("/services/{service}/{action}"),
        };
        let started = Instant::now();
        // A start waits for the service's ready line, health and peers: up to ~2 min.
        let answer = Client::http(self.target.control)
            .with_timeout(Duration::from_secs(150))
            .post(&path, None)
            .await?;
        if answer.status != 200 {
            return Err(fail(format!(
                "{action} {service}: HTTP {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )));
        }
        match action {
            "start" => {
                self.stopped.remove(service);
            }
            _ => {
                self.stopped.insert(service.to_owned());
                self.last_fault = Some(Instant::now());
            }
        }
        Ok(Some(format!("{} ms", started.elapsed().as_millis())))
    }

    /// Runs one step; its measured figures, if any.
    async fn step(&mut self, step: &Step) -> Result<Option<String>, Error> {
        match step {
            Step::Login(names) => {
                for user in names.list() {
                    self.login(&user).await?;
                }
                let software: Vec<String> = names
                    .list()
                    .iter()
                    .filter_map(|u| {
                        self.logins[u]
                            .software
                            .as_ref()
                            .map(|(f, n)| format!("{u}: {f} ({n} bytes)"))
                    })
                    .collect();
                Ok((!software.is_empty())
                    .then(|| format!("software checked: {}", software.join(", "))))
            }
            Step::Register(names) => self.register(&names.list()).await,
            Step::Call(c) => {
                let number = match (&c.to, &c.number, &c.line) {
                    (Some(user), _, _) => self.target.user(user)?.number,
                    (_, Some(number), _) => number.clone(),
                    (_, _, Some(line)) => self.target.line_number(line)?,
                    _ => return Err(fail("call: nowhere to call")),
                };
                self.mark_calls();
                // A tone changed by send_tone lasted its call only.
                self.tones.remove(&c.from);
                let turret = turret_in(&self.turrets, &c.from)?;
                let id = turret.call(&number).await?;
                self.calls.insert(c.from.clone(), id);
                if let Some(within) = &c.answered_within {
                    let view = turret
                        .wait_for("the call answered", duration(within)?, |v| {
                            v.calls
                                .iter()
                                .any(|x| x.id == id && x.state == CallState::Up)
                        })
                        .await?;
                    let setup = view
                        .calls
                        .iter()
                        .find(|x| x.id == id)
                        .and_then(|x| x.setup_ms);
                    // After a fault: the outage as a caller sees it.
                    let since_fault = self
                        .last_fault
                        .map(|f| format!(", {} ms after the last fault", f.elapsed().as_millis()))
                        .unwrap_or_default();
                    return Ok(setup.map(|ms| format!("answered after {ms} ms{since_fault}")));
                }
                Ok(Some(format!("dialled {number}")))
            }
            Step::InboundCall(c) => {
                // A carrier-side agent per call: each presents its own calling number.
                if let Some((old, call)) = self.inbound.take() {
                    let _ = old.hang_up(call);
                    // The BYE goes out before the agent stops.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    old.stop();
                }
                {
                    let carrier = self.target.carrier()?;
                    let config = UaConfig {
                        username: c.from.clone(),
                        password: String::new(),
                        local: SocketAddr::new(carrier.ip(), 0),
                        registrars: vec![self.target.sbc()?],
                        expires: 60,
                        keepalive: Duration::from_secs(1),
                        dead_after: Duration::from_secs(2),
                        tone_hz: 300.0,
                        auto_answer: false,
                    };
                    let ua = Turret::start(INBOUND, config).await?;
                    self.inbound = Some((ua, 0));
                }
                self.mark_calls();
                if let Some((ua, call)) = self.inbound.as_mut() {
                    *call = ua.call(&c.to).await?;
                }
                Ok(None)
            }
            Step::Answer(user) => {
                let mark = self.marks.get(user).copied().unwrap_or(0);
                self.tones.remove(user);
                let turret = turret_in(&self.turrets, user)?;
                let view = turret
                    .wait_for("a call ringing", EXPECT_WITHIN, |v| {
                        v.calls
                            .iter()
                            .any(|c| c.incoming && c.id > mark && c.state == CallState::Ringing)
                    })
                    .await?;
                let id = view
                    .calls
                    .iter()
                    .rev()
                    .find(|c| c.incoming && c.state == CallState::Ringing)
                    .map(|c| c.id)
                    .unwrap_or_default();
                turret.answer(id)?;
                self.calls.insert(user.clone(), id);
                turret
                    .wait_for("the call up", EXPECT_WITHIN, |v| {
                        v.calls
                            .iter()
                            .any(|c| c.id == id && c.state == CallState::Up)
                    })
                    .await?;
                Ok(None)
            }
            Step::Hangup(user) if user == INBOUND => {
                let (ua, call) = self
                    .inbound
                    .as_ref()
                    .ok_or_else(|| fail("no inbound call"))?;
                ua.hang_up(*call)?;
                Ok(None)
            }
            Step::Hangup(user) => {
                let call = self.call_of(user)?;
                self.turret(user)?.hang_up(call.id)?;
                Ok(None)
            }
            Step::Hold(user) | Step::Resume(user) => {
                let on = matches!(step, Step::Hold(_));
                let call = self.call_of(user)?;
                let turret = self.turret(user)?;
                turret.hold(call.id, on)?;
                let want = if on { CallState::Held } else { CallState::Up };
                turret
                    .wait_for("the call's new state", EXPECT_WITHIN, |v| {
                        v.calls.iter().any(|c| c.id == call.id && c.state == want)
                    })
                    .await?;
                Ok(None)
            }
            Step::SendTone(t) => {
                if !(0.0..=3400.0).contains(&t.hz) {
                    return Err(fail(format!(
                        "send_tone: {} Hz is not 0–3400 (G.711)",
                        t.hz
                    )));
                }
                self.media_of(&t.turret)?.set_tone(t.hz);
                self.tones.insert(t.turret.clone(), t.hz);
                Ok(None)
            }
            Step::Wait(d) => {
                tokio::time::sleep(duration(d)?).await;
                Ok(None)
            }
            Step::Stop(s) => self.control("stop", s).await,
            Step::Kill(s) => self.control("kill", s).await,
            Step::Start(s) => self.control("start", s).await,
            Step::ExpectRang(r) => {
                let within = Self::within(&r.within, EXPECT_WITHIN);
                for user in &r.turrets {
                    let mark = self.marks.get(user).copied().unwrap_or(0);
                    self.turret(user)?
                        .wait_for("rang", within, |v| {
                            v.calls.iter().any(|c| c.incoming && c.id > mark)
                        })
                        .await?;
                }
                // Forks go out together: a turret that has not rung 300 ms after the
                // others did is taken not to ring.
                if !r.not.is_empty() {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                for user in &r.not {
                    let mark = self.marks.get(user).copied().unwrap_or(0);
                    if let Some(c) = self
                        .turret(user)?
                        .view()
                        .calls
                        .iter()
                        .find(|c| c.incoming && c.id > mark)
                    {
                        return Err(fail(format!("{user} rang too (call from {})", c.number)));
                    }
                }
                Ok(None)
            }
            Step::ExpectState(s) => {
                let within = Self::within(&s.within, EXPECT_WITHIN);
                let want = s.state.clone();
                let is = |c: &CallView| format!("{:?}", c.state).to_lowercase() == want;
                if s.turret == INBOUND {
                    let (ua, call) = self
                        .inbound
                        .as_ref()
                        .ok_or_else(|| fail("no inbound call"))?;
                    let call = *call;
                    ua.wait_for(&format!("the inbound call {want}"), within, |v| {
                        v.calls.iter().any(|c| c.id == call && is(c))
                    })
                    .await?;
                    return Ok(None);
                }
                let id = self.call_of(&s.turret)?.id;
                self.turret(&s.turret)?
                    .wait_for(&format!("the call {want}"), within, |v| {
                        v.calls.iter().any(|c| c.id == id && is(c))
                    })
                    .await?;
                Ok(None)
            }
            Step::ExpectTone(t) => {
                let hz = match (&t.of, t.hz) {
                    (Some(user), _) => self.tone_of(user),
                    (_, Some(hz)) => hz,
                    _ => return Err(fail("expect_tone: no tone")),
                };
                let media = self.media_of(&t.turret)?;
                media.forget();
                let started = Instant::now();
                let within = Self::within(&t.within, EXPECT_WITHIN);
                poll(within, &format!("{} hears {hz} Hz", t.turret), || {
                    let heard = media.heard(4000);
                    async move { Ok((heard.len() >= 4000 && detect_tone(&heard, hz)).then_some(())) }
                })
                .await?;
                Ok(Some(format!(
                    "heard after {} ms",
                    started.elapsed().as_millis()
                )))
            }
            Step::ExpectMediaGap(g) => {
                let media = self.media_of(&g.turret)?;
                let under = duration(&g.under)?;
                tokio::time::sleep(Self::within(&g.over, Duration::from_secs(2))).await;
                let gap = media.longest_gap();
                if media.packets_since_forget() == 0 {
                    return Err(fail(format!("{}: no media came at all", g.turret)));
                }
                if gap >= under {
                    return Err(fail(format!(
                        "{}: the media stopped for {} ms",
                        g.turret,
                        gap.as_millis()
                    )));
                }
                Ok(Some(format!("longest gap {} ms", gap.as_millis())))
            }
            Step::ExpectAnsweredBy(a) => {
                let call = self.call_of(&a.turret)?;
                let named =
                    |by: &str| by.split([' ', ';', '<', ',']).next() == Some(a.user.as_str());
                match &call.answered_by {
                    Some(by) if named(by) => Ok(Some(format!("answered by {by}"))),
                    other => Err(fail(format!(
                        "{}'s call answered by {other:?}, not {}",
                        a.turret, a.user
                    ))),
                }
            }
            Step::ExpectMessage(m) => {
                let within = Self::within(&m.within, EXPECT_WITHIN);
                let wanted = m.contains.clone();
                let view = self
                    .turret(&m.turret)?
                    .wait_for(&format!("told {wanted:?}"), within, |v| {
                        v.messages.iter().any(|t| t.contains(&wanted))
                    })
                    .await?;
                Ok(view.messages.last().map(|t| t.replace('\n', " ")))
            }
            Step::ExpectCarrier(c) => {
                let admin = self.target.endpoint("carrier", "admin")?;
                let since = rfc3339(self.last_call_at);
                let within = Self::within(&c.within, EXPECT_WITHIN);
                let found = poll(within, &format!("the carrier called {}", c.called), || {
                    let since = since.clone();
                    async move {
                        let answer = Client::http(admin).get("/calls").await?;
                        let calls = answer.json()?;
                        Ok(calls.as_array().and_then(|calls| {
                            calls
                                .iter()
                                .filter(|x| x["at"].as_str().is_some_and(|at| at >= since.as_str()))
                                .find(|x| {
                                    x["called"] == c.called.as_str()
                                        && c.calling
                                            .as_ref()
                                            .is_none_or(|n| x["calling"] == n.as_str())
                                        && (!c.ended || !x["ended_at"].is_null())
                                })
                                .cloned()
                        }))
                    }
                })
                .await?;
                Ok(Some(format!(
                    "called {} from {}",
                    found["called"].as_str().unwrap_or_default(),
                    found["calling"].as_str().unwrap_or_default()
                )))
            }
            Step::ExpectRecordings(r) => self.expect_recordings(r).await,
            Step::ExpectCallRecord(c) => {
                let (admin, password) = self.target.admin();
                // Either TSS will do (one store): the first that answers.
                let mut clients = Vec::new();
                for tss in ["tss-1", "tss-2"] {
                    if let Ok(addr) = self.target.endpoint(tss, "https") {
                        clients.push(
                            Client::https(addr, &self.target.ca_file)?
                                .with_basic(&admin, &password),
                        );
                    }
                }
                let path = format!(
                    "/api/call-records?user={}&from={}",
                    c.user,
                    rfc3339(self.last_call_at)
                );
                let within = Self::within(&c.within, Duration::from_secs(10));
                let record = poll(within, &format!("a call record for {}", c.user), || {
                    let (clients, path) = (clients.clone(), path.clone());
                    async move {
                        let mut answer = Err(fail("the lab lists no TSS"));
                        for client in &clients {
                            answer = client.get(&path).await;
                            if answer.is_ok() {
                                break;
                            }
                        }
                        let answer = answer?;
                        if answer.status != 200 {
                            return Err(fail(format!("GET {path}: HTTP {}", answer.status)));
                        }
                        let records = answer.json()?;
                        let list = records.get("records").cloned().unwrap_or(records);
                        Ok(list.as_array().and_then(|l| {
                            l.iter()
                                .rev()
                                .find(|x| {
                                    c.outcome
                                        .as_ref()
                                        .is_none_or(|o| x["outcome"] == o.as_str())
                                        && c.direction
                                            .as_ref()
                                            .is_none_or(|d| x["direction"] == d.as_str())
                                })
                                .cloned()
                        }))
                    }
                })
                .await?;
                Ok(Some(format!(
                    "record {} ({}, {})",
                    record["record_id"].as_str().unwrap_or_default(),
                    record["direction"].as_str().unwrap_or_default(),
                    record["outcome"].as_str().unwrap_or_default()
                )))
            }
            Step::ExpectRegistered(r) => {
                let not = match &r.not {
                    Some(service) => Some(self.target.sip_of(service)?),
                    None => None,
                };
                let within = Self::within(&r.within, Duration::from_secs(10));
                let since = self.last_fault.unwrap_or_else(Instant::now);
                let left = within.saturating_sub(since.elapsed());
                let view = self
                    .turret(&r.turret)?
                    .wait_for("registered elsewhere", left, |v| {
                        v.registered_to.is_some_and(|to| Some(to) != not)
                    })
                    .await?;
                let at = view.registered_at.unwrap_or_else(Instant::now);
                Ok(Some(format!(
                    "registered with {} {} ms after the fault",
                    view.registered_to
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    at.saturating_duration_since(since).as_millis()
                )))
            }
        }
    }

    async fn expect_recordings(&self, r: &super::RecordingsStep) -> Result<Option<String>, Error> {
        let within = Self::within(&r.within, Duration::from_secs(10));
        let since = rfc3339(self.last_call_at);
        let mut found = Vec::new();
        for recorder in &r.recorders {
            let replay = self.target.endpoint(recorder, "replay")?;
            let path = format!("/recordings?user={}&from={since}", r.user);
            let recording: Value = poll(
                within,
                &format!("{recorder}: a complete recording of {}'s call", r.user),
                || {
                    let path = path.clone();
                    async move {
                        let answer = Client::http(replay).get(&path).await?;
                        let list = answer.json()?;
                        Ok(list
                            .as_array()
                            .and_then(|l| l.last().cloned())
                            .filter(|x| x["state"] == "complete"))
                    }
                },
            )
            .await?;
            let id = recording["id"].as_str().unwrap_or_default().to_owned();
            let audio = Client::http(replay)
                .get(&format!("/recordings/{id}/audio.wav"))
                .await?;
            if audio.status != 200 {
                return Err(fail(format!(
                    "{recorder}: {id}: audio HTTP {}",
                    audio.status
                )));
            }
            let mut reader = hound::WavReader::new(std::io::Cursor::new(audio.body.to_vec()))
                .map_err(|e| fail(format!("{recorder}: {id}: {e}")))?;
            let samples: Vec<i16> = reader.samples::<i16>().filter_map(Result::ok).collect();
            let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
            let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
            for (channel, audio, user) in
                [("caller", &left, &r.caller), ("callee", &right, &r.callee)]
            {
                if let Some(user) = user {
                    let hz = self.tone_of(user);
                    if !has_tone(audio, hz) {
                        return Err(fail(format!(
                            "{recorder}: {id}: the {channel} channel does not hold {user}'s {hz} Hz"
                        )));
                    }
                }
            }
            found.push(format!(
                "{recorder} {id} ({:.1} s)",
                left.len() as f64 / 8000.0
            ));
        }
        Ok(Some(found.join(", ")))
    }

    /// Ends what the scenario left: calls hung up, turrets stopped, stopped services
    /// started again.
    async fn clean_up(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for turret in self.turrets.values() {
            for call in turret
                .view()
                .calls
                .iter()
                .filter(|c| c.state != CallState::Ended)
            {
                let _ = turret.hang_up(call.id);
            }
        }
        if let Some((ua, call)) = &self.inbound {
            let _ = ua.hang_up(*call);
        }
        // Let the BYEs go out before the sockets close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for turret in self.turrets.values() {
            turret.stop();
        }
        if let Some((ua, _)) = &self.inbound {
            ua.stop();
        }
        for service in std::mem::take(&mut self.stopped) {
            if let Err(e) = self.control("start", &service).await {
                problems.push(e.to_string());
            }
        }
        problems
    }
}

/// Runs `scenario` (read from `file`) against `target`; `progress` hears of each step
/// as it ends.
pub async fn run(
    scenario: &Scenario,
    file: &str,
    target: &Target,
    mut progress: impl FnMut(&StepResult),
) -> ScenarioResult {
    let started = Instant::now();
    let mut runner = Runner {
        target,
        scenario,
        logins: BTreeMap::new(),
        turrets: BTreeMap::new(),
        calls: BTreeMap::new(),
        marks: BTreeMap::new(),
        inbound: None,
        tones: BTreeMap::new(),
        last_fault: None,
        last_call_at: SystemTime::now(),
        stopped: BTreeSet::new(),
    };
    let mut steps = Vec::new();
    let mut failed = false;
    for (index, step) in scenario.steps.iter().enumerate() {
        let text = step.describe();
        if failed {
            let result = StepResult {
                index,
                step: text,
                outcome: "skipped",
                millis: 0,
                detail: None,
            };
            progress(&result);
            steps.push(result);
            continue;
        }
        let at = Instant::now();
        let outcome = runner.step(step).await;
        let result = StepResult {
            index,
            step: text,
            outcome: if outcome.is_ok() { "passed" } else { "failed" },
            millis: at.elapsed().as_millis() as u64,
            detail: match outcome {
                Ok(detail) => detail,
                Err(e) => {
                    failed = true;
                    Some(e.to_string())
                }
            },
        };
        progress(&result);
        steps.push(result);
    }
    let problems = runner.clean_up().await;
    if !problems.is_empty() {
        failed = true;
        let result = StepResult {
            index: steps.len(),
            step: "restore the lab".into(),
            outcome: "failed",
            millis: 0,
            detail: Some(problems.join("; ")),
        };
        progress(&result);
        steps.push(result);
    }
    ScenarioResult {
        name: scenario.name.clone(),
        file: file.to_owned(),
        passed: !failed,
        millis: started.elapsed().as_millis() as u64,
        steps,
    }
}
