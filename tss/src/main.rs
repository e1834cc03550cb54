//! `tss`: thin binary around the `tss` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use floorwire::service::{ServeArgs, config, shutdown, telemetry, tls};

#[derive(Parser)]
#[command(
    version,
    about = "Floorwire Trading System Server: profile store, REST API, call records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (foreground; Ctrl-C or SIGTERM stops it). Prints
    /// `tss ready: admin=ADDR api=ADDR ftpes=ADDR` once the store is migrated and every port listens.
    Serve(ServeArgs),
    /// Apply the store's pending migrations and exit.
    Migrate(ServeArgs),
    /// Load a floor (sites, users, lines, profiles, turrets…) from a JSON seed file,
    /// as one change: whole or not at all (docs/tss-api.md).
    Seed {
        #[command(flatten)]
        serve: ServeArgs,
        /// The seed file.
        file: PathBuf,
    },
}

fn load(args: &ServeArgs) -> anyhow::Result<tss::Config> {
    Ok(config::load(
        args.config.as_deref(),
        tss::DEFAULT_CONFIG,
        tss::ENV_PREFIX,
    )?)
}

fn main() -> anyhow::Result<()> {
    tls::install_crypto_provider();
    // libunftp logs whole sessions at warn for every refused command: keep its errors only.
    telemetry::init("info,libunftp=error", false);
    let runtime = tokio::runtime::Runtime::new()?;
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = load(&args)?;
            runtime.block_on(async {
                let token = tokio_util::sync::CancellationToken::new();
                shutdown::cancel_on_signal(token.clone());
                tss::run(config, token, |b| match b.ftpes {
                    Some(ftpes) => {
                        println!("tss ready: admin={} api={} ftpes={ftpes}", b.admin, b.api)
                    }
                    None => println!("tss ready: admin={} api={}", b.admin, b.api),
                })
                .await
            })?;
        }
        Command::Migrate(args) => {
            let config = load(&args)?;
            runtime.block_on(async {
                let store = tss::open_store(&config.store).await?;
                println!("store migrated: revision {}", store.revision().await?);
                store.close().await;
                Ok::<_, tss::Error>(())
            })?;
        }
        Command::Seed { serve, file } => {
            let config = load(&serve)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let seed =
                tss::seed::parse(&text).with_context(|| format!("seed {}", file.display()))?;
            runtime
                .block_on(async {
                    let store = tss::open_store(&config.store).await?;
                    let revision = tss::seed::apply(&store, &seed, "seed").await;
                    store.close().await;
                    let revision = revision?;
                    println!("seeded {}: revision {revision}", file.display());
                    Ok::<_, anyhow::Error>(())
                })
                .with_context(|| format!("seed {}", file.display()))?;
        }
    }
    Ok(())
}
