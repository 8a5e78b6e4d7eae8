//! Traffic from the lab's namespaces: single requests, counted series, and waiting until the
//! agent's rules show the expected behaviour. Every method takes the client as a [`Source`]: a
//! namespace name (`pod.netns()`, `lab.node_netns()`, `ext.netns()`), or a namespace with a
//! chosen source address (`ext.from(ip)`, [`Source::new`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Lab, lock};
use crate::client::{self, ClientError, Protocol, Reply, Tally};
use crate::pod::Pod;
use crate::wait::{self, CHANGE_DEADLINE};

/// Per-request timeout while waiting for a change: short, because a request that times out
/// only means "not yet".
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Requests per attempt while waiting for a set of pods to answer.
const PROBE_BATCH: usize = 30;
/// How long a request must go unanswered to count as dropped.
pub const DROP_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a request comes from: a namespace, and optionally the source address to bind (one of
/// the namespace's own); without one the kernel picks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// The client's network namespace.
    pub netns: &'a str,
    /// The source address to bind, if not the kernel's choice.
    pub address: Option<IpAddr>,
}

impl<'a> Source<'a> {
    /// Requests from namespace `netns`, bound to `address` when given.
    #[must_use]
    pub fn new(netns: &'a str, address: Option<IpAddr>) -> Self {
        Self { netns, address }
    }
}

impl<'a> From<&'a str> for Source<'a> {
    fn from(netns: &'a str) -> Self {
        Self { netns, address: None }
    }
}

impl<'a> From<&'a String> for Source<'a> {
    fn from(netns: &'a String) -> Self {
        Self { netns, address: None }
    }
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(address) => write!(f, "{} (from {address})", self.netns),
            None => f.write_str(self.netns),
        }
    }
}

impl Lab {
    /// One TCP request from namespace `from` to `address`.
    ///
    /// # Errors
    /// See [`client::tcp_request`].
    pub fn tcp_request<'a>(
        &self,
        from: impl Into<Source<'a>>,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let from = from.into();
        self.run_in(from.netns, || client::tcp_request_from(from.address, address, timeout))
    }

    /// One UDP request from namespace `from` to `address`, from a fresh socket.
    ///
    /// # Errors
    /// See [`client::udp_request`].
    pub fn udp_request<'a>(
        &self,
        from: impl Into<Source<'a>>,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let from = from.into();
        self.run_in(from.netns, || client::udp_request_from(from.address, address, timeout))
    }

    /// One request over `protocol` from namespace `from` to `address`.
    ///
    /// # Errors
    /// See [`client::request`].
    pub fn request<'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let from = from.into();
        self.run_in(from.netns, || client::request_from(from.address, protocol, address, timeout))
    }

    /// `count` requests over `protocol` from namespace `from` to `address`, each with its own
    /// socket, counted per answering pod.
    #[must_use]
    pub fn tally<'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
        count: usize,
        timeout: Duration,
    ) -> Tally {
        let from = from.into();
        self.run_in(from.netns, || {
            let mut tally = Tally::default();
            for _ in 0..count {
                tally.record(&client::request_from(from.address, protocol, address, timeout));
            }
            tally
        })
    }

    /// Up to `count` requests, stopping at the first one that fails (a cheap probe while
    /// waiting: one lost request costs one timeout, not `count`).
    fn probe(&self, from: Source<'_>, protocol: Protocol, address: SocketAddr, count: usize) -> Tally {
        self.run_in(from.netns, || {
            let mut tally = Tally::default();
            for _ in 0..count {
                let outcome = client::request_from(from.address, protocol, address, PROBE_TIMEOUT);
                tally.record(&outcome);
                if outcome.is_err() {
                    break;
                }
            }
            tally
        })
    }

    /// Polls `check` until it passes (at most [`CHANGE_DEADLINE`]), failing early with the
    /// agent's exit status if an agent of this lab died on its own. Prints how long it took.
    ///
    /// # Panics
    /// When the deadline passes or an agent exited.
    #[track_caller]
    pub fn eventually<T>(&self, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
        wait::eventually(what, CHANGE_DEADLINE, || {
            self.assert_agents_alive();
            check()
        })
    }

    /// Waits until a batch of requests from `from` to `address` all succeed and are answered by
    /// exactly the pods `expected` (every one of them, nobody else). Returns how long it took.
    ///
    /// # Panics
    /// After [`CHANGE_DEADLINE`], with the last batch's tally.
    #[track_caller]
    pub fn wait_for_answers<'pod, 'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
        expected: impl IntoIterator<Item = &'pod Pod>,
    ) -> Duration {
        let from = from.into();
        let want: BTreeSet<&str> = expected.into_iter().map(Pod::name).collect();
        let started = Instant::now();
        let what = format!("{protocol:?} {address} from {from} answered by exactly {want:?}");
        self.eventually(&what, || {
            let tally = self.probe(from, protocol, address, PROBE_BATCH.max(10 * want.len()));
            let seen: BTreeSet<&str> = tally.pods().into_iter().collect();
            if tally.failures() == 0 && seen == want { Ok(()) } else { Err(tally.to_string()) }
        });
        started.elapsed()
    }

    /// Waits until one request from `from` to `address` is answered, by anyone, and returns the
    /// reply (for a Service with session affinity, where only one endpoint answers a client).
    ///
    /// # Panics
    /// After [`CHANGE_DEADLINE`], with the last outcome.
    #[track_caller]
    pub fn wait_for_answer<'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
    ) -> Reply {
        let from = from.into();
        self.eventually(&format!("{protocol:?} {address} from {from} answered"), || {
            self.request(from, protocol, address, PROBE_TIMEOUT).map_err(|error| error.to_string())
        })
    }

    /// Waits until a request from `from` to `address` is refused. Returns how long it took.
    ///
    /// Mind the kernel's ICMP rate limit per destination host (a burst of 6, then one a
    /// second): when rejects are ICMP errors, many in a row from one client stop arriving.
    ///
    /// # Panics
    /// After [`CHANGE_DEADLINE`], with the last outcome.
    #[track_caller]
    pub fn wait_for_refused<'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
    ) -> Duration {
        self.wait_for_failure(from.into(), protocol, address, PROBE_TIMEOUT, ClientError::Refused)
    }

    /// Waits until a request from `from` to `address` goes unanswered for [`DROP_TIMEOUT`]
    /// (dropped: no answer, no refusal). Returns how long it took.
    ///
    /// Only meaningful when the destination answers or refuses without the agent's rules; where
    /// it would time out anyway (an uncaptured external IP), check another frontend of the same
    /// manifest first, then [`Lab::assert_dropped`].
    ///
    /// # Panics
    /// After [`CHANGE_DEADLINE`], with the last outcome.
    #[track_caller]
    pub fn wait_for_dropped<'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
    ) -> Duration {
        self.wait_for_failure(from.into(), protocol, address, DROP_TIMEOUT, ClientError::Timeout)
    }

    /// Waits until a request with `timeout` fails with `expected` (refused, or timed out);
    /// returns how long it took.
    #[track_caller]
    fn wait_for_failure(
        &self,
        from: Source<'_>,
        protocol: Protocol,
        address: SocketAddr,
        timeout: Duration,
        expected: ClientError,
    ) -> Duration {
        let started = Instant::now();
        self.eventually(&format!("{protocol:?} {address} from {from}: {expected}"), || {
            match self.request(from, protocol, address, timeout) {
                Err(error) if std::mem::discriminant(&error) == std::mem::discriminant(&expected) => Ok(()),
                Ok(reply) => Err(format!("answered by {reply:?}")),
                Err(other) => Err(other.to_string()),
            }
        });
        started.elapsed()
    }

    /// Asserts that `attempts` requests from `from` to `address` each go unanswered for
    /// [`DROP_TIMEOUT`]: dropped, neither answered nor refused.
    ///
    /// # Panics
    /// If any request is answered or fails otherwise (refused, denied, unreachable).
    #[track_caller]
    pub fn assert_dropped<'a>(
        &self,
        from: impl Into<Source<'a>>,
        protocol: Protocol,
        address: SocketAddr,
        attempts: usize,
    ) {
        let from = from.into();
        let tally = self.tally(from, protocol, address, attempts, DROP_TIMEOUT);
        assert!(
            tally.timeouts == attempts,
            "{protocol:?} {address} from {from} should be dropped (time out), got: {tally}"
        );
    }

    fn assert_agents_alive(&self) {
        for agent in lock(&self.shared.agents).iter() {
            let mut process = lock(agent);
            if let Some(status) = process.exited() {
                panic!(
                    "kproxy exited on its own with {status}; log {}:\n{}",
                    process.log_path().display(),
                    std::fs::read_to_string(process.log_path()).unwrap_or_default()
                );
            }
        }
    }
}
