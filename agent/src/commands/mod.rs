//! One module per subcommand; [`run`] dispatches.

mod cleanup;
mod debug;
mod explain;
mod inspect;
mod render;
mod run;

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{Command, DebugCommand};

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
            Command::Debug(DebugCommand::Config(args)) => debug::config(&args),
            Command::Debug(DebugCommand::Rbac) => debug::rbac(),
            Command::Debug(DebugCommand::Explain(args)) => explain::explain(&args).await,
            Command::Debug(DebugCommand::Diff(args)) => inspect::diff(&args).await,
            Command::Debug(DebugCommand::Status(args)) => inspect::status(&args).await,
            Command::Cleanup(args) => cleanup::cleanup(&args).await,
        }
    })
}

/// The node's name: the override, else the host name, lower-cased as kube-proxy does.
fn node_name(hostname_override: Option<&str>) -> String {
    let name = match hostname_override {
        Some(name) => name.to_string(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
    name.to_lowercase()
}

/// A client for the API server: from `kubeconfig` when given, else the in-cluster service
/// account.
async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::incluster()
            .map_err(|e| format!("no in-cluster configuration ({e}); pass --kubeconfig or --manifests"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot create the API client: {e}"))
}
