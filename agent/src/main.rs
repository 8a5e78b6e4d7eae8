//! `kproxy`: the node agent that programs Kubernetes Services into the kernel with nftables.
//!
//! The binary is the imperative shell around the pure `kproxy-rules` crate: it parses the
//! command line ([`cli`]), reads the inputs ([`sources`]), loads [`config`], asks the rules crate for the
//! desired ruleset ([`plan`]) and hands the transactions to the kernel ([`dataplane`]) in the [`sync`] loop, and
//! reports health and metrics ([`serve`]).
//! [`commands`] holds one module per subcommand. Parsing the command line touches neither the
//! network nor the kernel; a usage error prints one line and exits 64.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod config;
mod dataplane;
mod events;
mod node;
mod plan;
mod serve;
mod sources;
mod sync;

use std::process::ExitCode;

use clap::Parser;

/// The exit code for a command-line usage error (`EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            let _ = err.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(help_or_version) => {
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    cli::init_logging(cli.log_format);
    commands::run(cli.command)
}
