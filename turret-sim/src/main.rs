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
    /// Start the lab on its embedded defaults (foreground; Ctrl-C stops it cleanly).
    /// Prints `lab ready: PATH` once every service is up; PATH is lab.json.
    Lab {
        /// Directory for lab.json and state.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("floorwire-lab"))]
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

fn main() -> anyhow::Result<()> {
    floorwire::service::tls::install_crypto_provider();
    floorwire::service::telemetry::init("info", false);
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        floorwire::service::shutdown::cancel_on_signal(shutdown.clone());
        match cli.command {
            Command::Lab { dir } => turret_sim::lab(&dir, shutdown, |path| {
                println!("lab ready: {}", path.display())
            })
            .await
            .context("lab"),
            Command::Answer { sip, media } => turret_sim::answer(sip, media, shutdown)
                .await
                .context("answer"),
        }
    })
}
