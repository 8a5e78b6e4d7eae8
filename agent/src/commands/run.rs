//! `kproxy run`: program the kernel from the API (or a manifests directory) and keep it in sync.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::dataplane::nft::NftCli;
use crate::events::Events;
use crate::node::NodeSettings;
use crate::serve::health::Health;
use crate::serve::metrics::Metrics;
use crate::serve::{Status, http};
use crate::sources::kube::KubeSource;
use crate::sources::manifests::{ManifestFiles, ManifestSource};
use crate::sync::{OutcomeReceiver, SyncLoop, SyncSettings};

/// The exit code for an unusable configuration (`EX_CONFIG`).
const EXIT_CONFIG: u8 = 78;

/// Runs until SIGTERM or SIGINT and leaves the rules in place; fails at start on a bad
/// configuration, a missing nft, or an unreadable manifests directory.
pub async fn run(args: RunArgs) -> ExitCode {
    let config = match args.settings.resolve() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let node = NodeSettings::new(super::node_name(config.hostname_override.as_deref()), &config);
    let nft = NftCli::new(&args.nft.nft);
    match nft.version().await {
        Ok(version) => tracing::info!(%version, node = %node.name, "starting"),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    }

    let status = Arc::new(Status { health: Health::new(2 * config.sync_period), metrics: Metrics::new() });
    if let Some(address) = config.healthz_bind_address {
        http::spawn("health", address, http::health_routes(Arc::clone(&status))).await;
    }
    if let Some(address) = config.metrics_bind_address {
        http::spawn("metrics", address, http::metrics_routes(Arc::clone(&status))).await;
    }
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = SyncSettings { min_sync_period: config.min_sync_period, sync_period: config.sync_period };
    let (outcomes, followers) = tokio::sync::watch::channel(None);
    spawn_followers(&followers, &status);

    match (&args.source.manifests, &args.source.kubeconfig) {
        (Some(dir), _) => {
            if let Err(e) = ManifestFiles::read(dir) {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
            let source = ManifestSource::new(dir.clone(), args.manifests_poll_interval);
            SyncLoop::new(source, nft, node, settings, status, outcomes).run(shutdown).await;
        }
        (None, kubeconfig) => {
            let client = match super::kube_client(kubeconfig.as_deref()).await {
                Ok(client) => client,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let events = Events::new(client.clone(), &node.name);
            let source = KubeSource::start(client, &node.name);
            SyncLoop::new(source, nft, node, settings, status, outcomes)
                .with_events(events)
                .run(shutdown)
                .await;
        }
    }
    tracing::info!("stopping; the rules stay in place (`kproxy cleanup` removes them)");
    ExitCode::SUCCESS
}

/// Starts the tasks that act on each successful sync's outcome, each with its own receiver.
fn spawn_followers(outcomes: &OutcomeReceiver, status: &Arc<Status>) {
    tokio::spawn(crate::serve::health_check::follow(outcomes.clone(), Arc::clone(status)));
    tokio::spawn(crate::dataplane::conntrack::follow(outcomes.clone(), Arc::clone(status)));
}

/// Resolves at SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
