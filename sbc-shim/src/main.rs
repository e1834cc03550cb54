//! `sbc-shim`: thin binary around the `sbc_shim` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Floorwire sbc-shim")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (foreground; Ctrl-C or SIGTERM stops it).
    Serve {
        /// TOML config file; embedded defaults when absent. Env: SBC_SHIM__SECTION__KEY.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    floorwire::service::tls::install_crypto_provider();
    floorwire::service::telemetry::init("info", false);
    let Command::Serve { config } = Cli::parse().command;
    let config: sbc_shim::Config = floorwire::service::config::load(
        config.as_deref(),
        sbc_shim::DEFAULT_CONFIG,
        sbc_shim::ENV_PREFIX,
    )?;
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        floorwire::service::shutdown::cancel_on_signal(shutdown.clone());
        // One machine-readable line on stdout once up; tests and scripts wait for it.
        sbc_shim::run(config, shutdown, |admin| {
            println!("sbc-shim ready: admin={admin}")
        })
        .await
        .context("sbc-shim")
    })
}
