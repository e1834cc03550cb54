//! `turret-sim load`: N simulated turrets of the lab's users log in and register (they
//! answer every call at once), then place calls between each other at M a second for a
//! duration, each held for a while and hung up. A line of progress a second; at the
//! end, the counts and the percentiles of call setup time (INVITE to 200).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::scenario::run::{default_tone, login_lab_user, start_turret};
use crate::scenario::target::Target;
use crate::turret::{CallState, Turret};

/// Bounds on what a run may ask for.
pub const MAX_RATE: f64 = 500.0;
pub const MIN_RATE: f64 = 0.01;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub turrets: usize,
    pub rate: f64,
    pub duration: Duration,
    pub hold: Duration,
}

/// The outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub turrets: usize,
    pub placed: u64,
    pub answered: u64,
    pub failed: u64,
    /// Failure statuses seen, with their counts (`408` for no answer in 10 s).
    pub failures: std::collections::BTreeMap<String, u64>,
    pub setup_ms_p50: Option<u64>,
    pub setup_ms_p90: Option<u64>,
    pub setup_ms_p99: Option<u64>,
    pub setup_ms_max: Option<u64>,
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Tally {
    placed: u64,
    answered: u64,
    failed: u64,
    up: u64,
    setups: Vec<u64>,
    failures: std::collections::BTreeMap<String, u64>,
}

/// The `p`th percentile (0–100) of sorted `values`.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// One call: placed, answered (or not) within 10 s, held, hung up.
async fn one_call(caller: Arc<Turret>, number: String, hold: Duration, tally: Arc<Mutex<Tally>>) {
    let id = match caller.call(&number).await {
        Ok(id) => id,
        Err(e) => {
            if let Ok(mut t) = tally.lock() {
                t.failed += 1;
                *t.failures.entry(e.to_string()).or_default() += 1;
            }
            return;
        }
    };
    let outcome = caller
        .wait_for("answered or ended", Duration::from_secs(10), |v| {
            v.calls
                .iter()
                .any(|c| c.id == id && matches!(c.state, CallState::Up | CallState::Ended))
        })
        .await
        .ok()
        .and_then(|v| v.calls.into_iter().find(|c| c.id == id));
    match outcome {
        Some(call) if call.state == CallState::Up => {
            if let Ok(mut t) = tally.lock() {
                t.answered += 1;
                t.up += 1;
                t.setups.push(call.setup_ms.unwrap_or_default());
            }
            tokio::time::sleep(hold).await;
            let _ = caller.hang_up(id);
            if let Ok(mut t) = tally.lock() {
                t.up -= 1;
            }
        }
        other => {
            let _ = caller.hang_up(id);
            if let Ok(mut t) = tally.lock() {
                t.failed += 1;
                let status = other
                    .and_then(|c| c.status)
                    .map_or("408".to_owned(), |s| s.to_string());
                *t.failures.entry(status).or_default() += 1;
            }
        }
    }
}

/// Runs the load against `target`; `progress` gets a line a second.
pub async fn run(
    target: &Target,
    options: &LoadOptions,
    shutdown: CancellationToken,
    mut progress: impl FnMut(&str),
) -> Result<LoadReport, Error> {
    if !options.rate.is_finite() || options.rate < MIN_RATE || options.rate > MAX_RATE {
        return Err(Error::Load(format!(
            "--rate: between {MIN_RATE} and {MAX_RATE} calls a second"
        )));
    }
    if options.duration > MAX_DURATION {
        return Err(Error::Load(format!(
            "--duration: at most {} s",
            MAX_DURATION.as_secs()
        )));
    }
    let users: Vec<String> = target.json["users"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|u| u["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if options.turrets < 2 || options.turrets > users.len() {
        return Err(Error::Load(format!(
            "--turrets: between 2 and {} (the lab's users)",
            users.len()
        )));
    }
    let mut turrets = Vec::new();
    let mut numbers = Vec::new();
    for user in &users[..options.turrets] {
        let logged = login_lab_user(target, user).await?;
        let turret = start_turret(&logged, user, default_tone(user), true).await?;
        turret.register()?;
        numbers.push(target.user(user)?.number);
        turrets.push(Arc::new(turret));
    }
    for t in &turrets {
        t.wait_for("registered", Duration::from_secs(10), |v| {
            v.registered_to.is_some()
        })
        .await?;
    }
    progress(&format!("{} turrets registered", turrets.len()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let mut next = tokio::time::Instant::now();
    let mut last_report = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut n: usize = 0;
    while started.elapsed() < options.duration && !shutdown.is_cancelled() {
        tokio::time::sleep_until(next).await;
        next += interval;
        let caller = turrets[n % turrets.len()].clone();
        // The callee: the next turret along, a different one each round.
        let offset = 1 + (n / turrets.len()) % (turrets.len() - 1);
        let number = numbers[(n + offset) % turrets.len()].clone();
        n += 1;
        if let Ok(mut t) = tally.lock() {
            t.placed += 1;
        }
        calls.spawn(one_call(caller, number, options.hold, tally.clone()));
        while calls.try_join_next().is_some() {}
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Ok(t) = tally.lock() {
                progress(&format!(
                    "{:>4.0} s  placed {}  answered {}  failed {}  up {}",
                    started.elapsed().as_secs_f64(),
                    t.placed,
                    t.answered,
                    t.failed,
                    t.up
                ));
            }
        }
    }
    // Calls in progress finish (answer wait and hold are bounded).
    while calls.join_next().await.is_some() {}
    for t in &turrets {
        t.stop();
    }
    let t = tally.lock().map_err(|_| Error::Load("tally".into()))?;
    let mut setups = t.setups.clone();
    setups.sort_unstable();
    Ok(LoadReport {
        turrets: turrets.len(),
        placed: t.placed,
        answered: t.answered,
        failed: t.failed,
        failures: t.failures.clone(),
        setup_ms_p50: percentile(&setups, 50.0),
        setup_ms_p90: percentile(&setups, 90.0),
        setup_ms_p99: percentile(&setups, 99.0),
        setup_ms_max: setups.last().copied(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 90.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
