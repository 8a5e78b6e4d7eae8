//! The sync loop: wait for a reason, take a snapshot, plan, diff against what the kernel
//! holds, apply, publish the outcome.
//!
//! * The first sync waits until the source is ready (never an empty ruleset at start) and is a
//!   full one: kproxy's tables, as the kernel holds them, are rewritten in place in one
//!   transaction, so that traffic sees the old rules or the new ones, and session affinity
//!   survives an agent restart.
//! * Later syncs are incremental: the transaction carries only what changed. A failed
//!   transaction leaves the previous rules in place and makes the next sync full; it is
//!   retried after a short delay.
//! * Syncs are at least `min_sync_period` apart: changes arriving in between coalesce into the
//!   next one, so a burst of a thousand endpoint changes costs a handful of syncs, while a
//!   single change after a quiet spell is programmed at once.
//! * Every `sync_period` every desired chain and set is rewritten in place, which repairs drift
//!   (a table edited or deleted by hand) without losing session-affinity state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use kproxy_rules::NodeContext;
use kproxy_rules::model::ServicePortEndpoints;
use kproxy_rules::nft::{self, Ruleset, Transaction, Update};
use tokio::time::{Instant, sleep_until};

use crate::dataplane::Dataplane;
use crate::events::Events;
use crate::node::NodeSettings;
use crate::plan::{Warning, plan};
use crate::serve::Status;
use crate::sources::{Changes, InputError, Snapshot, Source};

/// How long a failed transaction waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What the kernel holds after a successful sync, published on a watch channel for the tasks
/// that follow the dataplane: health-check node ports, conntrack cleanup.
#[derive(Clone, Debug)]
pub struct SyncOutcome {
    /// The Service ports programmed, with all their endpoints.
    pub ports: Arc<Vec<ServicePortEndpoints>>,
    /// The node they were planned for.
    pub node: NodeContext,
}

/// The sending half of the outcome channel; `None` until the first sync succeeds.
pub type OutcomeSender = tokio::sync::watch::Sender<Option<Arc<SyncOutcome>>>;
/// The receiving half of the outcome channel.
pub type OutcomeReceiver = tokio::sync::watch::Receiver<Option<Arc<SyncOutcome>>>;

/// The loop's timing.
#[derive(Clone, Copy, Debug)]
pub struct SyncSettings {
    /// The least time between the starts of two syncs.
    pub min_sync_period: Duration,
    /// How often the tables are rewritten in full.
    pub sync_period: Duration,
}

/// Why a sync runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Start,
    Changed,
    Periodic,
    Retry,
}

/// What kind of transaction a sync sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// Every chain and set of kproxy's tables rewritten in place, dynamic sets (affinity)
    /// kept: at start, and after a failure.
    Full,
    /// The same, every `sync_period`: it repairs drift.
    Refresh,
    /// kproxy's tables deleted and created afresh in one transaction: only when the kernel
    /// cannot be read or refuses a full sync's rewrite.
    Replace,
    /// Only what changed.
    Incremental,
}

impl SyncKind {
    fn as_str(self) -> &'static str {
        match self {
            SyncKind::Full => "full",
            SyncKind::Refresh => "refresh",
            SyncKind::Replace => "replace",
            SyncKind::Incremental => "incremental",
        }
    }
}

/// What one sync sent to the kernel.
struct Programmed {
    kind: SyncKind,
    operations: usize,
    elements: usize,
    /// Whether the cleanup transaction (if any) succeeded: otherwise the kernel holds more than
    /// the plan, and the next sync must be full.
    cleaned_up: bool,
}

/// The loop and its memory of what the kernel holds.
pub struct SyncLoop<S, D> {
    source: S,
    dataplane: D,
    node: NodeSettings,
    settings: SyncSettings,
    status: Arc<Status>,
    /// What the kernel holds, when the last transaction succeeded; `None` forces a full sync.
    applied: Option<Ruleset>,
    last_sync: Option<Instant>,
    retry_at: Option<Instant>,
    /// The input errors last logged, so that a lasting problem is logged once.
    logged_errors: Vec<InputError>,
    /// The warnings last reported, likewise.
    logged_warnings: Vec<Warning>,
    /// Where warnings become Kubernetes Events, when the agent follows the API.
    events: Option<Events>,
    /// The trigger time last seen per EndpointSlice; `None` until the first sync.
    trigger_times: Option<HashMap<String, String>>,
    /// Where each successful sync's outcome is published.
    outcomes: OutcomeSender,
}

impl<S: Source, D: Dataplane> SyncLoop<S, D> {
    /// A loop that programs `dataplane` from `source` for `node`, publishing on `outcomes`.
    pub fn new(
        source: S,
        dataplane: D,
        node: NodeSettings,
        settings: SyncSettings,
        status: Arc<Status>,
        outcomes: OutcomeSender,
    ) -> Self {
        SyncLoop {
            source,
            dataplane,
            node,
            settings,
            status,
            applied: None,
            last_sync: None,
            retry_at: None,
            logged_errors: Vec::new(),
            logged_warnings: Vec::new(),
            events: None,
            trigger_times: None,
            outcomes,
        }
    }

    /// Also reports warnings as Events on their objects.
    #[must_use]
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Runs until `shutdown` resolves; the rules stay as they are.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            () = self.source.ready() => {}
            () = &mut shutdown => return,
        }
        tracing::info!("caches ready; programming the first sync");
        let mut reason = Some(Reason::Start);
        let mut next_full = Instant::now() + self.settings.sync_period;
        loop {
            let reason_now = match reason.take() {
                Some(r) => r,
                None => {
                    let retry_at = self.retry_at;
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return,
                        changes = self.source.changed() => {
                            self.record_changes(changes);
                            Reason::Changed
                        }
                        () = sleep_until(retry_at.unwrap_or(next_full)), if retry_at.is_some() => Reason::Retry,
                        () = sleep_until(next_full) => Reason::Periodic,
                    }
                }
            };
            if let Some(last) = self.last_sync {
                tokio::select! {
                    () = sleep_until(last + self.settings.min_sync_period) => {}
                    () = &mut shutdown => return,
                }
            }
            let kind = match (reason_now, self.applied.is_some()) {
                (Reason::Start, _) | (_, false) => SyncKind::Full,
                (Reason::Periodic, true) => SyncKind::Refresh,
                (Reason::Changed | Reason::Retry, true) => SyncKind::Incremental,
            };
            self.sync(kind).await;
            if kind != SyncKind::Incremental {
                next_full = Instant::now() + self.settings.sync_period;
            }
        }
    }

    fn record_changes(&self, changes: Changes) {
        let metrics = &self.status.metrics;
        metrics.service_changes.inc_by(changes.services);
        metrics.endpoint_changes.inc_by(changes.endpoint_slices);
        metrics.last_queued_timestamp.set(unix_seconds());
        self.status.health.queued(Timestamp::now());
    }

    /// One sync: snapshot, plan, transaction, apply, publish.
    async fn sync(&mut self, kind: SyncKind) {
        let started = Instant::now();
        self.last_sync = Some(started);
        let snapshot = self.source.snapshot();
        let node_object = self.node.find(&snapshot.nodes);
        self.status.health.set_node(node_object);
        let node = self.node.context(node_object);
        let plan = plan(&snapshot, &node);
        self.report_new_problems(&plan.errors, &plan.warnings).await;
        let incremental = match (&self.applied, kind) {
            (Some(applied), SyncKind::Incremental) => nft::diff(applied, &plan.ruleset),
            _ => None,
        };
        let plan_time = started.elapsed();

        let apply_started = Instant::now();
        let programmed = self.program(kind, incremental, &plan.ruleset).await;
        let apply_time = apply_started.elapsed();
        let Programmed { kind, operations, elements, cleaned_up } = match programmed {
            Ok(programmed) => programmed,
            Err((kind, e)) => {
                tracing::error!(kind = kind.as_str(), "sync failed, the previous rules stay in place: {e}");
                self.status.metrics.sync_failures.inc();
                self.applied = None;
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
                return;
            }
        };
        let service_ports = plan.ports.len();
        let endpoints = plan.endpoint_count();
        let applied = cleaned_up.then_some(plan.ruleset);
        self.retry_at = None;

        let metrics = &self.status.metrics;
        let ruleset = applied.as_ref();
        metrics.sync_duration.observe(started.elapsed().as_secs_f64());
        metrics.last_sync_timestamp.set(unix_seconds());
        metrics.services.set(gauge(service_ports));
        metrics.endpoints.set(gauge(endpoints));
        if let Some(ruleset) = ruleset {
            metrics.chains.set(gauge(ruleset.tables.iter().map(|t| t.chains.len()).sum()));
            metrics.elements.set(gauge(
                ruleset.tables.iter().flat_map(|t| t.sets.values()).map(|s| s.elements.len()).sum(),
            ));
        }
        metrics.last_transaction_operations.set(gauge(operations));
        self.status.health.updated(Timestamp::now());
        self.observe_programming_latency(&snapshot);
        if operations > 0 {
            tracing::info!(
                kind = kind.as_str(),
                plan_ms = plan_time.as_millis() as u64,
                apply_ms = apply_time.as_millis() as u64,
                operations,
                elements,
                service_ports,
                endpoints,
                "synced"
            );
        } else {
            tracing::debug!("rules already up to date");
        }
        self.applied = applied;
        self.outcomes.send_replace(Some(Arc::new(SyncOutcome { ports: Arc::new(plan.ports), node })));
    }

    /// Sends the kernel what takes it to `ruleset`: the `incremental` update when there is
    /// one, else a full sync; then the cleanup of what that left unused.
    async fn program(
        &self,
        kind: SyncKind,
        incremental: Option<Update<'_>>,
        ruleset: &Ruleset,
    ) -> Result<Programmed, (SyncKind, D::Error)> {
        let (kind, update) = match incremental {
            Some(update) => {
                if !update.changes.is_empty() {
                    self.dataplane.apply(&update.changes).await.map_err(|e| (SyncKind::Incremental, e))?;
                }
                (SyncKind::Incremental, update)
            }
            None => {
                let kind = if kind == SyncKind::Incremental { SyncKind::Full } else { kind };
                self.apply_full(kind, ruleset).await?
            }
        };
        let mut cleaned_up = true;
        if !update.cleanup.is_empty()
            && let Err(e) = self.dataplane.apply(&update.cleanup).await
        {
            tracing::warn!("removing unused chains failed; the next sync is full: {e}");
            cleaned_up = false;
        }
        Ok(Programmed {
            kind,
            operations: update.changes.operations().len() + update.cleanup.operations().len(),
            elements: update.changes.element_count() + update.cleanup.element_count(),
            cleaned_up,
        })
    }

    /// Applies `ruleset` whole: kproxy's tables rewritten in place from what the kernel holds
    /// ([`Transaction::rewrite`]), or replaced when the kernel cannot be read or refuses the
    /// rewrite (a table left by an older kproxy with other declarations).
    async fn apply_full<'a>(
        &self,
        kind: SyncKind,
        ruleset: &'a Ruleset,
    ) -> Result<(SyncKind, Update<'a>), (SyncKind, D::Error)> {
        match self.dataplane.inventory().await {
            Ok(existing) => {
                let update = Transaction::rewrite(ruleset, &existing);
                match self.dataplane.apply(&update.changes).await {
                    Ok(()) => return Ok((kind, update)),
                    Err(e) => {
                        tracing::warn!("kproxy's tables cannot be rewritten in place, replacing them: {e}")
                    }
                }
            }
            Err(e) => tracing::warn!("kproxy's tables cannot be read, replacing them: {e}"),
        }
        let replace = Update { changes: Transaction::replace(ruleset), cleanup: Transaction::default() };
        match self.dataplane.apply(&replace.changes).await {
            Ok(()) => Ok((SyncKind::Replace, replace)),
            Err(e) => Err((SyncKind::Replace, e)),
        }
    }

    async fn report_new_problems(&mut self, errors: &[InputError], warnings: &[Warning]) {
        for error in errors.iter().filter(|e| !self.logged_errors.contains(e)) {
            tracing::warn!("skipped: {error}");
        }
        self.logged_errors = errors.to_vec();
        for warning in warnings.iter().filter(|w| !self.logged_warnings.contains(w)) {
            tracing::warn!("{}", warning.message);
            if let Some(events) = &self.events {
                events.warn(warning).await;
            }
        }
        self.logged_warnings = warnings.to_vec();
    }

    /// Observes, for every EndpointSlice whose trigger time is new since the last sync, how
    /// long ago that change was triggered. The first sync only records the times: they may be
    /// hours old, and were programmed by whoever ran before.
    fn observe_programming_latency(&mut self, snapshot: &Snapshot) {
        let now = Timestamp::now();
        let first = self.trigger_times.is_none();
        let seen = self.trigger_times.get_or_insert_with(HashMap::new);
        for slice in &snapshot.endpoint_slices {
            let Some(time) = &slice.trigger_time else { continue };
            let key = format!("{}/{}", slice.model.service.namespace, slice.model.name);
            if seen.get(&key) == Some(time) {
                continue;
            }
            if !first && let Ok(triggered) = time.parse::<Timestamp>() {
                let seconds = (now.as_millisecond() - triggered.as_millisecond()) as f64 / 1000.0;
                self.status.metrics.network_programming_duration.observe(seconds.max(0.0));
            }
            seen.insert(key, time.clone());
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
