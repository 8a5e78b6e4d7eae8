//! Which endpoints serve a Service port's traffic.
//!
//! kube-proxy's rule (`pkg/proxy/topology.go`, KEP-1669): the *ready* endpoints; when none is
//! ready, the endpoints that are *serving and terminating*, so that a rolling update never
//! blackholes a Service whose pods are all shutting down; when there are none of those either,
//! nothing, and the Service rejects new connections. An endpoint that is neither ready nor
//! serving never receives traffic. The choice is made per address family, as kube-proxy's
//! per-family proxiers do.

use crate::model::{Endpoint, IpFamily};

/// Why the selected endpoints were chosen; shown by `kproxy debug` and in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionReason {
    /// At least one endpoint is ready: the ready ones serve.
    Ready,
    /// None is ready: the serving-but-terminating ones serve.
    TerminatingFallback,
    /// No endpoint can serve: new connections are rejected.
    NoEndpoints,
}

/// The endpoints chosen for one family of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The endpoints that receive new connections, in the order given.
    pub endpoints: Vec<&'a Endpoint>,
    /// Why these.
    pub reason: SelectionReason,
}

/// Chooses the endpoints of `family` that receive new connections to a Service port.
pub fn cluster_endpoints(endpoints: &[Endpoint], family: IpFamily) -> Selection<'_> {
    let of_family = || endpoints.iter().filter(move |e| IpFamily::of(&e.address) == family);
    let ready: Vec<&Endpoint> = of_family().filter(|e| e.conditions.ready).collect();
    if !ready.is_empty() {
        return Selection { endpoints: ready, reason: SelectionReason::Ready };
    }
    let terminating: Vec<&Endpoint> =
        of_family().filter(|e| e.conditions.serving && e.conditions.terminating).collect();
    if !terminating.is_empty() {
        return Selection { endpoints: terminating, reason: SelectionReason::TerminatingFallback };
    }
    Selection { endpoints: Vec::new(), reason: SelectionReason::NoEndpoints }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Conditions;

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            address: ip.parse().unwrap(),
            port: 8080,
            conditions: Conditions { ready, serving, terminating },
            node_name: None,
            zone: None,
        }
    }

    fn addresses(s: &Selection<'_>) -> Vec<String> {
        s.endpoints.iter().map(|e| e.address.to_string()).collect()
    }

    #[test]
    fn selection_should_prefer_ready_endpoints_over_terminating_ones() {
        let eps = [
            ep("10.0.0.1", true, true, false),
            ep("10.0.0.2", false, true, true),
            ep("10.0.0.3", false, false, false),
        ];
        let s = cluster_endpoints(&eps, IpFamily::V4);
        assert_eq!(addresses(&s), ["10.0.0.1"]);
        assert_eq!(s.reason, SelectionReason::Ready);
    }

    #[test]
    fn selection_should_fall_back_to_serving_terminating_endpoints_when_none_is_ready() {
        let eps = [
            ep("10.0.0.1", false, false, true),
            ep("10.0.0.2", false, true, true),
            ep("10.0.0.3", false, false, false),
        ];
        let s = cluster_endpoints(&eps, IpFamily::V4);
        assert_eq!(addresses(&s), ["10.0.0.2"]);
        assert_eq!(s.reason, SelectionReason::TerminatingFallback);
    }

    #[test]
    fn selection_should_never_pick_not_ready_non_serving_endpoints() {
        let eps = [
            ep("10.0.0.1", false, false, true),
            ep("10.0.0.3", false, false, false),
            ep("10.0.0.4", false, true, false),
        ];
        let s = cluster_endpoints(&eps, IpFamily::V4);
        assert!(s.endpoints.is_empty());
        assert_eq!(s.reason, SelectionReason::NoEndpoints);
    }

    #[test]
    fn selection_should_decide_each_family_on_its_own() {
        let eps = [
            ep("10.0.0.1", false, true, true),
            ep("fd00::1", true, true, false),
            ep("fd00::2", false, true, true),
        ];
        assert_eq!(addresses(&cluster_endpoints(&eps, IpFamily::V4)), ["10.0.0.1"]);
        assert_eq!(addresses(&cluster_endpoints(&eps, IpFamily::V6)), ["fd00::1"]);
    }
}
