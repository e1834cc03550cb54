//! `sbc-shim`: thin binary around the `sbc_shim` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use floorwire::service::{ServeArgs, serve_main};
use sbc_shim::normalise::{Context, Direction, Field, RuleSet};

#[derive(Parser)]
#[command(version, about = "Floorwire SBC shim: the trunk edge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (foreground; Ctrl-C or SIGTERM stops it).
    Serve(ServeArgs),
    /// Print each number's normalised form and the rules that made it, or why it is
    /// refused (exit 1 if any is refused).
    Normalise {
        /// Rule file; the shipped French preset when absent.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Which way the call goes.
        #[arg(long, value_enum, default_value_t = Direction::Outbound)]
        direction: Direction,
        /// Which number of the call.
        #[arg(long, value_enum, default_value_t = Field::Called)]
        field: Field,
        /// Trunk the call came in on (for trunk-specific rules).
        #[arg(long, default_value = "")]
        trunk: String,
        /// Numbers to normalise.
        #[arg(required = true)]
        numbers: Vec<String>,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Serve(args) => {
            serve_main(
                "sbc-shim",
                &args,
                sbc_shim::DEFAULT_CONFIG,
                sbc_shim::ENV_PREFIX,
                sbc_shim::run,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Normalise {
            rules,
            direction,
            field,
            trunk,
            numbers,
        } => {
            let rules = match rules {
                Some(path) => RuleSet::load(&path)?,
                None => RuleSet::french()?,
            };
            let context = Context {
                direction,
                field,
                trunk: &trunk,
            };
            let mut refused_any = false;
            for number in &numbers {
                match rules.normalise(number, &context) {
                    Ok(n) => println!(
                        "{number}\t{}\tclass={}{}\trules={}\t[{}]",
                        n.number,
                        n.class.as_deref().unwrap_or("-"),
                        if n.priority { "\tpriority" } else { "" },
                        n.rules.join(","),
                        rules.version()
                    ),
                    Err(refused) => {
                        refused_any = true;
                        println!("{number}\trefused {refused}\t[{}]", rules.version());
                    }
                }
            }
            Ok(if refused_any {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
