//! `sbc-shim`: thin binary around the `sbc_shim` library.

use clap::{Parser, Subcommand};
use floorwire::service::{ServeArgs, serve_main};

#[derive(Parser)]
#[command(version, about = "Floorwire sbc-shim")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (foreground; Ctrl-C or SIGTERM stops it).
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    serve_main(
        "sbc-shim",
        &args,
        sbc_shim::DEFAULT_CONFIG,
        sbc_shim::ENV_PREFIX,
        sbc_shim::run,
    )?;
    Ok(())
}
