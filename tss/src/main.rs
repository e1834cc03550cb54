//! `tss`: thin binary around the `tss` library.

use clap::{Parser, Subcommand};
use floorwire::service::{ServeArgs, serve_main};

#[derive(Parser)]
#[command(version, about = "Floorwire tss")]
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
    serve_main("tss", &args, tss::DEFAULT_CONFIG, tss::ENV_PREFIX, tss::run)?;
    Ok(())
}
