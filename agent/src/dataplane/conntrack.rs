//! Stale UDP conntrack cleanup over netlink (ctnetlink): kube-proxy's conntrack reconciler.
//!
//! After every successful sync, [`follow`] lists the kernel's UDP conntrack entries and deletes
//! those that [`kproxy_rules::conntrack`] calls stale: sent to a UDP Service frontend, and
//! DNATed to an endpoint that no longer serves it (zero-endpoint Services included). A client
//! that keeps sending from one source port then reaches a live endpoint with its next packet,
//! instead of waiting out `nf_conntrack_udp_timeout` while every packet renews the old entry.
//! Nothing is flushed; TCP and entries to other destinations are never touched.
//!
//! The layers, each testable on its own:
//!
//! * [`wire`] builds and parses the netlink messages as plain bytes and values
//!   (`netlink-packet-netfilter`): a dump request per address family (asking the kernel to dump
//!   only UDP, where it can filter), delete requests by original tuple, and the replies.
//! * [`ConntrackSocket`] is the socket: a non-blocking `NETLINK_NETFILTER` socket on the tokio
//!   reactor, which sends those bytes and collects the replies.
//! * [`reconcile`] is the step itself against any [`ConntrackTable`]; [`follow`] runs it after
//!   every sync outcome, records the metrics and logs.
//!
//! A node without conntrack (no `nf_conntrack_netlink`, no table) only gets a warning: the
//! follower keeps waiting for the next outcome and tries again.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_rules::conntrack::{Entry, IpProtocol, UdpFrontends};
use kproxy_rules::model::IpFamily;
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use crate::serve::Status;
use crate::sync::{OutcomeReceiver, SyncOutcome};

pub mod wire;

/// How long one reconciliation (list and delete) may take before it is abandoned.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(20);
/// Delete requests sent in one datagram; their acks must fit the socket's receive buffer.
const DELETE_BATCH: usize = 128;
/// Receive buffer per datagram: the kernel caps a dump datagram at 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A conntrack entry as the kernel listed it: the tuples, plus what a delete must name again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelEntry {
    /// The tuples and protocol.
    pub entry: Entry,
    /// The entry's conntrack zone (`CTA_ZONE`), when it is not the default zone.
    pub zone: Option<u16>,
}

/// Why the conntrack table could not be listed or changed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// A socket call failed (no `NETLINK_NETFILTER`, no permission, …).
    #[error("conntrack netlink socket: {0}: {1}")]
    Io(&'static str, io::Error),
    /// The kernel refused a request with this errno (`EINVAL` when the conntrack netlink
    /// subsystem is missing).
    #[error("kernel refused to {0} conntrack entries: {1}")]
    Kernel(&'static str, io::Error),
    /// A reply could not be parsed.
    #[error("unreadable conntrack netlink reply: {0}")]
    Decode(String),
    /// The reconciliation took longer than [`RECONCILE_TIMEOUT`].
    #[error("conntrack reconciliation did not finish within {RECONCILE_TIMEOUT:?}")]
    Timeout,
}

/// The kernel's conntrack table, as the reconciliation needs it.
pub trait ConntrackTable {
    /// The UDP entries of `family` (the kernel may be asked to filter; the caller does not
    /// rely on it).
    async fn list_udp(&mut self, family: IpFamily) -> Result<Vec<KernelEntry>, ConntrackError>;

    /// Deletes `entries` by their original tuple; returns how many existed and were deleted
    /// (an entry that expired meanwhile is not an error).
    async fn delete(&mut self, entries: &[KernelEntry]) -> Result<usize, ConntrackError>;
}

/// What one reconciliation saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// UDP frontends indexed.
    pub frontends: usize,
    /// UDP entries listed.
    pub listed: usize,
    /// Entries found stale.
    pub stale: usize,
    /// Entries deleted.
    pub deleted: usize,
}

/// Lists the UDP entries of the families the outcome has UDP frontends in, and deletes the
/// stale ones. With no UDP frontend at all the table is not even listed.
pub async fn reconcile<T: ConntrackTable>(
    table: &mut T,
    outcome: &SyncOutcome,
) -> Result<Reconciliation, ConntrackError> {
    let index = UdpFrontends::new(&outcome.ports, &outcome.node);
    let mut done = Reconciliation { frontends: index.len(), ..Reconciliation::default() };
    let mut stale = Vec::new();
    for family in index.families() {
        let entries = table.list_udp(family).await?;
        done.listed += entries.len();
        stale.extend(entries.into_iter().filter(|e| index.is_stale(&e.entry)));
    }
    done.stale = stale.len();
    if !stale.is_empty() {
        for entry in &stale {
            tracing::debug!(zone = entry.zone, "deleting stale conntrack entry {}", entry.entry);
        }
        done.deleted = table.delete(&stale).await?;
    }
    Ok(done)
}

/// Follows the sync loop: after each new outcome, reconciles the kernel's conntrack table,
/// observes `kubeproxy_conntrack_reconciler_sync_duration_seconds`, adds to
/// `kubeproxy_conntrack_reconciler_deleted_entries_total`, logs deletions at info and failures
/// at warn (a failure repeated unchanged only at debug). Returns when the sync loop is gone.
pub async fn follow(outcomes: OutcomeReceiver, status: Arc<Status>) {
    follow_table(outcomes, status, ConntrackSocket::new).await;
}

/// [`follow`] with a table made by `table` for every reconciliation (a fresh socket each
/// time, so a conntrack module loaded later is picked up).
pub async fn follow_table<T, F>(mut outcomes: OutcomeReceiver, status: Arc<Status>, mut table: F)
where
    T: ConntrackTable,
    F: FnMut() -> T,
{
    let mut last_error: Option<String> = None;
    while outcomes.changed().await.is_ok() {
        let Some(outcome) = outcomes.borrow_and_update().clone() else { continue };
        let started = Instant::now();
        let result = tokio::time::timeout(RECONCILE_TIMEOUT, reconcile(&mut table(), &outcome))
            .await
            .unwrap_or(Err(ConntrackError::Timeout));
        let elapsed = started.elapsed();
        let metrics = &status.metrics;
        metrics.conntrack_reconciler_sync_duration.observe(elapsed.as_secs_f64());
        match result {
            Ok(done) => {
                last_error = None;
                metrics.conntrack_reconciler_deleted_entries.inc_by(done.deleted as u64);
                if done.deleted > 0 {
                    tracing::info!(
                        listed = done.listed,
                        stale = done.stale,
                        elapsed_ms = elapsed.as_millis() as u64,
                        "deleted {} stale UDP conntrack entries",
                        done.deleted
                    );
                } else {
                    tracing::debug!(
                        frontends = done.frontends,
                        listed = done.listed,
                        stale = done.stale,
                        "no stale UDP conntrack entries"
                    );
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() == Some(text.as_str()) {
                    tracing::debug!("stale UDP conntrack cleanup failed again: {text}");
                } else {
                    tracing::warn!(
                        "stale UDP conntrack cleanup failed; UDP clients may keep reaching removed endpoints until their entries time out: {text}"
                    );
                }
                last_error = Some(text);
            }
        }
    }
}

/// A `NETLINK_NETFILTER` socket for ctnetlink requests, non-blocking on the tokio reactor;
/// opened on first use, so that a node with no UDP Service never needs conntrack.
#[derive(Default)]
pub struct ConntrackSocket {
    socket: Option<TokioSocket>,
    sequence: u32,
}

impl ConntrackSocket {
    /// A socket not opened yet.
    pub fn new() -> ConntrackSocket {
        ConntrackSocket::default()
    }

    /// The socket, opened and bound (in the agent's network namespace) on first use.
    fn socket(&mut self) -> Result<&TokioSocket, ConntrackError> {
        if self.socket.is_none() {
            let io = |what| move |e| ConntrackError::Io(what, e);
            let mut socket = TokioSocket::new(NETLINK_NETFILTER).map_err(io("open"))?;
            let inner = socket.socket_mut();
            inner.bind_auto().map_err(io("bind"))?;
            inner.connect(&SocketAddr::new(0, 0)).map_err(io("connect"))?;
            // Errors then echo only the request's header, not the whole request.
            inner.set_cap_ack(true).map_err(io("set NETLINK_CAP_ACK"))?;
            self.socket = Some(socket);
        }
        self.socket.as_ref().ok_or(ConntrackError::Io("open", io::ErrorKind::NotConnected.into()))
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConntrackError> {
        self.socket()?.send(bytes).await.map(drop).map_err(|e| ConntrackError::Io("send", e))
    }

    async fn receive(&mut self, buffer: &mut Vec<u8>) -> Result<(), ConntrackError> {
        buffer.clear();
        self.socket()?.recv(buffer).await.map_err(|e| ConntrackError::Io("receive", e))
    }

    /// Dumps the table of `family`, kernel-filtered to `udp_only` when asked; entries of other
    /// protocols are dropped here in any case.
    async fn dump(&mut self, family: IpFamily, udp_only: bool) -> Result<Vec<KernelEntry>, ConntrackError> {
        let sequence = self.next_sequence();
        self.send(&wire::dump_request(family, sequence, udp_only)).await?;
        let mut buffer = Vec::with_capacity(RECEIVE_BUFFER);
        let mut entries = Vec::new();
        let mut dumped = 0_usize;
        loop {
            self.receive(&mut buffer).await?;
            for reply in wire::parse_replies(&buffer)? {
                match reply {
                    wire::Reply::Entry { sequence: s, entry } if s == sequence => {
                        dumped += 1;
                        entries.extend(entry.filter(|e| e.entry.protocol == IpProtocol::UDP));
                    }
                    wire::Reply::Done { sequence: s } if s == sequence => {
                        tracing::debug!(%family, udp_only, dumped, udp = entries.len(), "listed conntrack entries");
                        return Ok(entries);
                    }
                    wire::Reply::Error { sequence: s, errno } if s == sequence => {
                        return Err(ConntrackError::Kernel("list", io::Error::from_raw_os_error(errno)));
                    }
                    // A late reply to an earlier request, or an ack: not ours.
                    _ => {}
                }
            }
        }
    }
}

impl ConntrackTable for ConntrackSocket {
    async fn list_udp(&mut self, family: IpFamily) -> Result<Vec<KernelEntry>, ConntrackError> {
        match self.dump(family, true).await {
            // Kernels before 5.8 have no CTA_FILTER; some refuse it instead of ignoring it.
            Err(ConntrackError::Kernel(_, e))
                if matches!(e.raw_os_error(), Some(libc_errno::EINVAL | libc_errno::EOPNOTSUPP)) =>
            {
                tracing::debug!("the kernel cannot filter the conntrack dump ({e}); filtering here");
                self.dump(family, false).await
            }
            other => other,
        }
    }

    async fn delete(&mut self, entries: &[KernelEntry]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        let mut buffer = Vec::with_capacity(RECEIVE_BUFFER);
        for batch in entries.chunks(DELETE_BATCH) {
            let mut request = Vec::new();
            let mut pending: HashMap<u32, &KernelEntry> = HashMap::new();
            for entry in batch {
                let sequence = self.next_sequence();
                request.extend(wire::delete_request(entry, sequence));
                pending.insert(sequence, entry);
            }
            self.send(&request).await?;
            while !pending.is_empty() {
                self.receive(&mut buffer).await?;
                for reply in wire::parse_replies(&buffer)? {
                    match reply {
                        wire::Reply::Ack { sequence } if pending.remove(&sequence).is_some() => deleted += 1,
                        wire::Reply::Error { sequence, errno } => {
                            let Some(entry) = pending.remove(&sequence) else { continue };
                            // Gone already: it expired, or someone else deleted it.
                            if errno != libc_errno::ENOENT {
                                return Err(ConntrackError::Kernel(
                                    "delete",
                                    io::Error::other(format!(
                                        "{} ({})",
                                        io::Error::from_raw_os_error(errno),
                                        entry.entry
                                    )),
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// The errno values the module tells apart (Linux numbering).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EINVAL: i32 = 22;
    pub const EOPNOTSUPP: i32 = 95;
}

#[cfg(test)]
mod tests;
