//! `tpo`: thin binary around the `tpo` library.

use clap::{Parser, Subcommand};

// jemalloc: little fragmentation under many short-lived calls, and exact heap
// figures (`floorwire_tpo_heap_allocated_bytes`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use floorwire::service::{ServeArgs, config, shutdown, telemetry, tls};

#[derive(Parser)]
#[command(
    version,
    about = "Floorwire Turret Proxy Openline: SIP registrar for turrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (foreground; Ctrl-C or SIGTERM stops it). Prints
    /// `tpo ready: admin=ADDR sip=ADDR` once every port listens.
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tls::install_crypto_provider();
    telemetry::init("info", false);
    let Command::Serve(args) = Cli::parse().command;
    let config: tpo::Config =
        config::load(args.config.as_deref(), tpo::DEFAULT_CONFIG, tpo::ENV_PREFIX)?;
    let runtime = config.runtime.build()?;
    runtime.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        shutdown::cancel_on_signal(token.clone());
        tpo::run(config, token, |b| {
            println!("tpo ready: admin={} sip={}", b.admin, b.sip)
        })
        .await
    })?;
    Ok(())
}
