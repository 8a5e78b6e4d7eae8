//! Traffic from the lab's namespaces: single requests, counted series, and waiting until the
//! agent's rules show the expected behaviour.

use std::collections::BTreeSet;
use std::net::SocketAddr;
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

impl Lab {
    /// One TCP request from namespace `from` to `address`.
    ///
    /// # Errors
    /// See [`client::tcp_request`].
    pub fn tcp_request(
        &self,
        from: &str,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.run_in(from, || client::tcp_request(address, timeout))
    }

    /// One UDP request from namespace `from` to `address`, from a fresh socket.
    ///
    /// # Errors
    /// See [`client::udp_request`].
    pub fn udp_request(
        &self,
        from: &str,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.run_in(from, || client::udp_request(address, timeout))
    }

    /// One request over `protocol` from namespace `from` to `address`.
    ///
    /// # Errors
    /// See [`client::request`].
    pub fn request(
        &self,
        from: &str,
        protocol: Protocol,
        address: SocketAddr,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.run_in(from, || client::request(protocol, address, timeout))
    }

    /// `count` requests over `protocol` from namespace `from` to `address`, each with its own
    /// socket, counted per answering pod.
    #[must_use]
    pub fn tally(
        &self,
        from: &str,
        protocol: Protocol,
        address: SocketAddr,
        count: usize,
        timeout: Duration,
    ) -> Tally {
        self.run_in(from, || {
            let mut tally = Tally::default();
            for _ in 0..count {
                tally.record(&client::request(protocol, address, timeout));
            }
            tally
        })
    }

    /// Up to `count` requests, stopping at the first one that fails (a cheap probe while
    /// waiting: one lost request costs one timeout, not `count`).
    fn probe(&self, from: &str, protocol: Protocol, address: SocketAddr, count: usize) -> Tally {
        self.run_in(from, || {
            let mut tally = Tally::default();
            for _ in 0..count {
                let outcome = client::request(protocol, address, PROBE_TIMEOUT);
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
    pub fn wait_for_answers<'pod>(
        &self,
        from: &str,
        protocol: Protocol,
        address: SocketAddr,
        expected: impl IntoIterator<Item = &'pod Pod>,
    ) -> Duration {
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

    /// Waits until a request from `from` to `address` is refused. Returns how long it took.
    ///
    /// Mind the kernel's ICMP rate limit per destination host (a burst of 6, then one a
    /// second): when rejects are ICMP errors, many in a row from one client stop arriving.
    ///
    /// # Panics
    /// After [`CHANGE_DEADLINE`], with the last outcome.
    #[track_caller]
    pub fn wait_for_refused(&self, from: &str, protocol: Protocol, address: SocketAddr) -> Duration {
        let started = Instant::now();
        self.eventually(&format!("{protocol:?} {address} from {from} refused"), || {
            match self.request(from, protocol, address, PROBE_TIMEOUT) {
                Err(ClientError::Refused) => Ok(()),
                Ok(reply) => Err(format!("answered by {reply:?}")),
                Err(other) => Err(other.to_string()),
            }
        });
        started.elapsed()
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
