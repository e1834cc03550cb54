//! `tpo`: thin binary around the `tpo` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Floorwire tpo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (foreground; Ctrl-C or SIGTERM stops it).
    Serve {
        /// TOML config file; embedded defaults when absent. Env: TPO__SECTION__KEY.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    floorwire::service::tls::install_crypto_provider();
    floorwire::service::telemetry::init("info", false);
    let Command::Serve { config } = Cli::parse().command;
    let config: tpo::Config =
        floorwire::service::config::load(config.as_deref(), tpo::DEFAULT_CONFIG, tpo::ENV_PREFIX)?;
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        floorwire::service::shutdown::cancel_on_signal(shutdown.clone());
        // One machine-readable line on stdout once up; tests and scripts wait for it.
        tpo::run(config, shutdown, |admin| {
            println!("tpo ready: admin={admin}")
        })
        .await
        .context("tpo")
    })
}
