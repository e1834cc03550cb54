//! `tpo`: thin binary around the `tpo` library.

use clap::{Parser, Subcommand};
use floorwire::service::{ServeArgs, serve_main};

#[derive(Parser)]
#[command(version, about = "Floorwire tpo")]
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
    serve_main("tpo", &args, tpo::DEFAULT_CONFIG, tpo::ENV_PREFIX, tpo::run)?;
    Ok(())
}
