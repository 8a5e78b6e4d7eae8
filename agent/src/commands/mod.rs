//! One module per subcommand; [`run`] dispatches.

mod cleanup;
mod render;
mod run;

use std::process::ExitCode;

use kproxy_rules::NodeContext;

use crate::cli::{Command, DebugCommand, SourceArgs};

/// Runs a parsed command to completion.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match command {
            Command::Run(args) => run::run(args).await,
            Command::Debug(DebugCommand::Render(args)) => render::render(&args),
            Command::Cleanup(args) => cleanup::cleanup(&args).await,
        }
    })
}

/// The node the rules are planned for: `--hostname-override`, else the host name, lower-cased
/// as kube-proxy does.
fn node_context(source: &SourceArgs) -> NodeContext {
    let name = source.hostname_override.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    });
    NodeContext { node_name: name.to_lowercase() }
}
