//! `turret-sim`: thin binary around the `turret_sim` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Floorwire turret simulator and lab launcher")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole dual-DC lab on loopback (foreground; Ctrl-C stops it cleanly).
    /// Prints `lab ready: PATH` once every service is healthy; PATH is lab.json.
    Lab {
        /// Directory for lab.json, certificates, logs, the store and spools (the store
        /// and spools start afresh from the seed at each start).
        #[arg(long, default_value_os_t = std::env::temp_dir().join("floorwire-lab"))]
        dir: PathBuf,
        /// Directory holding the `tss`, `tpo` and `sbc-shim` binaries (default: the
        /// directory of this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// The lab's control port (HTTP: list, stop and start services).
        #[arg(long, default_value_t = turret_sim::lab::CONTROL)]
        control: SocketAddr,
    },
    /// Run scenario files (docs/scenarios.md) against a lab; exit 0 only if every
    /// scenario passes.
    Run {
        /// Scenario files (YAML).
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Start a lab for the run (in --dir) and stop it after.
        #[arg(long, conflicts_with = "target")]
        lab: bool,
        /// Run against a lab already running: its lab.json.
        #[arg(long)]
        target: Option<PathBuf>,
        /// Write the results as JUnit XML.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write the results as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// With --lab: the lab's directory.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("floorwire-lab"))]
        dir: PathBuf,
        /// With --lab: where the service binaries are (default: beside this one).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Generate calls between simulated turrets of a running lab: N turrets, M calls a
    /// second, for a duration; a line a second, then the setup-time percentiles.
    Load {
        /// The lab's lab.json.
        #[arg(long)]
        target: PathBuf,
        /// Turrets (the lab's first N users; 2 to 20).
        #[arg(long, default_value_t = 10)]
        turrets: usize,
        /// Calls placed a second (at most 500).
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// How long to place calls (e.g. 30s, 5m; at most 1h).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// How long each answered call is held before it is hung up.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        hold: std::time::Duration,
        /// Write the final report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Failed calls tolerated, in percent of those placed, before the exit status is 1.
        #[arg(long, default_value_t = 0.0)]
        allow_failed: f64,
    },
    /// The carrier stand-in: answers every call arriving on its SIP address.
    /// Prints `carrier ready: admin=ADDR sip=ADDR`.
    Carrier {
        /// SIP UDP address.
        #[arg(long, default_value = "127.0.3.1:5060")]
        sip: SocketAddr,
        /// Admin HTTP address (/metrics, /healthz).
        #[arg(long, default_value = "127.0.3.1:9100")]
        admin: SocketAddr,
        /// Media address announced in SDP answers (RTP arriving there is echoed).
        #[arg(long, default_value = "127.0.3.1:20000")]
        media: SocketAddr,
        /// The SBC service address inbound calls (POST /calls) go to.
        #[arg(long, default_value = "127.0.1.30:5060")]
        sbc: SocketAddr,
    },
    /// The recorder stand-in: a SIPREC recording server storing each recording as WAV
    /// plus metadata JSON, with search and replay over HTTP. Prints
    /// `recorder ready: admin=ADDR sip=ADDR replay=ADDR`.
    Recorder {
        /// SIPREC (SIP over UDP) address; recorded streams take ports on its IP.
        #[arg(long, default_value = "127.0.1.40:5060")]
        sip: SocketAddr,
        /// Admin HTTP address (/metrics, /healthz).
        #[arg(long, default_value = "127.0.1.40:9100")]
        admin: SocketAddr,
        /// Replay HTTP address (search, metadata, audio).
        #[arg(long, default_value = "127.0.1.40:8080")]
        replay: SocketAddr,
        /// Folder of the recordings.
        #[arg(long, default_value = "recordings")]
        dir: PathBuf,
    },
    /// Answer every SIP call arriving on an address (a far end for SIPp or tests).
    Answer {
        /// SIP UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:5090")]
        sip: SocketAddr,
        /// Media address announced in SDP answers.
        #[arg(long, default_value = "127.0.0.1:40000")]
        media: SocketAddr,
    },
}

/// `--bin-dir`, else the directory of this binary.
fn bin_dir_or_default(bin_dir: Option<PathBuf>) -> PathBuf {
    bin_dir.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_default()
    })
}

fn main() -> anyhow::Result<()> {
    floorwire::service::tls::install_crypto_provider();
    floorwire::service::telemetry::init("info", false);
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        floorwire::service::shutdown::cancel_on_signal(shutdown.clone());
        match cli.command {
            Command::Run {
                scenarios,
                lab,
                target,
                junit,
                json,
                dir,
                bin_dir,
            } => {
                let lab = lab.then(|| turret_sim::lab::LabOptions {
                    dir,
                    bin_dir: bin_dir_or_default(bin_dir),
                    control: turret_sim::lab::CONTROL,
                });
                let passed = turret_sim::cli::run_scenarios(
                    &scenarios,
                    lab,
                    target,
                    junit.as_deref(),
                    json.as_deref(),
                    shutdown,
                )
                .await
                .context("run")?;
                if !passed {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Load {
                target,
                turrets,
                rate,
                duration,
                hold,
                json,
                allow_failed,
            } => {
                let target = turret_sim::scenario::target::Target::load(&target).context("load")?;
                let options = turret_sim::load::LoadOptions {
                    turrets,
                    rate,
                    duration,
                    hold,
                };
                let report =
                    turret_sim::load::run(&target, &options, shutdown, |line| println!("{line}"))
                        .await
                        .context("load")?;
                let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
                println!(
                    "placed {}  answered {}  failed {} {:?}  setup p50 {}  p90 {}  p99 {}  max {}",
                    report.placed,
                    report.answered,
                    report.failed,
                    report.failures,
                    ms(report.setup_ms_p50),
                    ms(report.setup_ms_p90),
                    ms(report.setup_ms_p99),
                    ms(report.setup_ms_max)
                );
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                        .with_context(|| format!("--json {}", path.display()))?;
                }
                let failed_percent = 100.0 * report.failed as f64 / report.placed.max(1) as f64;
                if report.placed == 0 || failed_percent > allow_failed {
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Lab {
                dir,
                bin_dir,
                control,
            } => {
                let bin_dir = bin_dir_or_default(bin_dir);
                let options = turret_sim::lab::LabOptions {
                    dir,
                    bin_dir,
                    control,
                };
                turret_sim::lab::run(options, shutdown, |path| {
                    println!("lab ready: {}", path.display());
                    // What to try next, for a newcomer at the terminal.
                    println!(
                        "try, from another terminal:\n  \
                         {exe} run --target {path} deploy/lab/scenarios/*.yaml\n  \
                         {exe} load --target {path} --turrets 10 --rate 5 --duration 30s\n  \
                         curl -s http://127.0.3.1:9100/calls   (what the carrier received)\n\
                         Ctrl-C stops the lab.",
                        exe = std::env::current_exe()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|_| "turret-sim".into()),
                        path = path.display()
                    );
                })
                .await
                .context("lab")
            }
            Command::Carrier {
                sip,
                admin,
                media,
                sbc,
            } => turret_sim::carrier::serve(
                turret_sim::carrier::CarrierOptions {
                    sip,
                    admin,
                    media,
                    sbc,
                },
                shutdown,
                |admin, sip| println!("carrier ready: admin={admin} sip={sip}"),
            )
            .await
            .context("carrier"),
            Command::Recorder {
                sip,
                admin,
                replay,
                dir,
            } => turret_sim::recorder::serve(
                turret_sim::recorder::RecorderOptions {
                    sip,
                    admin,
                    replay,
                    dir,
                },
                shutdown,
                |admin, sip, replay| {
                    println!("recorder ready: admin={admin} sip={sip} replay={replay}")
                },
            )
            .await
            .context("recorder"),
            Command::Answer { sip, media } => turret_sim::answer(sip, media, shutdown)
                .await
                .context("answer"),
        }
    })
}
