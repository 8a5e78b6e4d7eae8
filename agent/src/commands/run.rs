//! `kproxy run`: program the kernel from a manifests directory and keep it in sync.
//!
//! Each turn of the loop reads the directory; when the files changed, or the last transaction
//! failed and its retry is due, it plans the ruleset again and, when the ruleset differs from
//! what the kernel holds, replaces kproxy's tables in one atomic transaction. On SIGTERM or
//! SIGINT the loop ends and the rules stay in place, so traffic does not notice a restart.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use kproxy_rules::NodeContext;
use kproxy_rules::nft::{Ruleset, Transaction};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::dataplane::nft::NftCli;
use crate::manifests::ManifestFiles;
use crate::plan::plan;

/// How long a failed transaction waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Runs until SIGTERM or SIGINT; fails at start if nft is missing or the directory unreadable.
pub async fn run(args: RunArgs) -> ExitCode {
    let node = super::node_context(&args.source);
    let nft = NftCli::new(&args.nft.nft);
    match nft.version().await {
        Ok(version) => tracing::info!(%version, node = %node.node_name, "starting"),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = ManifestFiles::read(&args.source.manifests) {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let (mut terminate, mut interrupt) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };

    let mut sync = ManifestSync::new(args.source.manifests.clone(), node, nft);
    loop {
        sync.step().await;
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            () = tokio::time::sleep(args.manifests_poll_interval) => {}
        }
    }
    tracing::info!("stopping; the rules stay in place (`kproxy cleanup` removes them)");
    ExitCode::SUCCESS
}

/// The state of syncing one manifests directory into the kernel.
struct ManifestSync {
    dir: std::path::PathBuf,
    node: NodeContext,
    nft: NftCli,
    /// The files the last plan was made from.
    files: Option<ManifestFiles>,
    /// What the kernel holds, when the last transaction succeeded.
    applied: Option<Ruleset>,
    /// When a failed transaction may be tried again.
    retry_at: Option<Instant>,
    /// The last directory error logged, so that a lasting problem is logged once.
    read_error: Option<String>,
}

impl ManifestSync {
    fn new(dir: std::path::PathBuf, node: NodeContext, nft: NftCli) -> ManifestSync {
        ManifestSync { dir, node, nft, files: None, applied: None, retry_at: None, read_error: None }
    }

    /// One turn: read, and plan and apply if needed.
    async fn step(&mut self) {
        let files = match ManifestFiles::read(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                let message = e.to_string();
                if self.read_error.as_ref() != Some(&message) {
                    tracing::error!("{message}; keeping the rules in place");
                    self.read_error = Some(message);
                }
                return;
            }
        };
        self.read_error = None;
        let changed = self.files.as_ref() != Some(&files);
        let retry_due = self.applied.is_none() && self.retry_at.is_none_or(|at| Instant::now() >= at);
        if !changed && !retry_due {
            return;
        }

        let plan = plan(&files.parse(), &self.node);
        if changed {
            for error in &plan.errors {
                tracing::warn!("skipped: {error}");
            }
        }
        self.files = Some(files);
        if self.applied.as_ref() == Some(&plan.ruleset) {
            tracing::debug!("manifests changed, rules did not");
            return;
        }

        let tx = Transaction::replace(&plan.ruleset);
        let started = Instant::now();
        match self.nft.apply(&tx).await {
            Ok(()) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    service_ports = plan.service_ports,
                    endpoints = plan.endpoints,
                    operations = tx.operations().len(),
                    elements = tx.element_count(),
                    "synced"
                );
                self.applied = Some(plan.ruleset);
                self.retry_at = None;
            }
            Err(e) => {
                tracing::error!("sync failed, the previous rules stay in place: {e}");
                self.applied = None;
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
            }
        }
    }
}
