//! Which endpoints serve a Service port's traffic.
//!
//! kube-proxy's rule (`pkg/proxy/topology.go`, KEP-1669): the *ready* endpoints; when none is
//! ready, the endpoints that are *serving and terminating*, so that a rolling update never
//! blackholes a Service whose pods are all shutting down; when there are none of those either,
//! nothing, and the Service rejects new connections. An endpoint that is neither ready nor
//! serving never receives traffic. The choice is made per address family, as kube-proxy's
//! per-family proxiers do.

use crate::model::{Endpoint, IpFamily, NodeContext};

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

/// Chooses the endpoints of `family` that receive new connections under the Cluster policy.
///
/// The ready endpoints, narrowed by topology hints when kube-proxy would honour them
/// ([`topology_filter`]); when none is ready, the serving-and-terminating ones, hints ignored.
pub fn cluster_endpoints<'a>(
    endpoints: &'a [Endpoint],
    family: IpFamily,
    node: &NodeContext,
) -> Selection<'a> {
    let of_family = || endpoints.iter().filter(move |e| IpFamily::of(&e.address) == family);
    let ready: Vec<&Endpoint> = of_family().filter(|e| e.conditions.ready).collect();
    if !ready.is_empty() {
        let hinted = topology_filter(&ready, node);
        return Selection { endpoints: hinted.unwrap_or(ready), reason: SelectionReason::Ready };
    }
    fallback(of_family().collect())
}

/// Chooses this node's endpoints of `family`, for the Local policy: the local ready ones, else
/// the local serving-and-terminating ones.
pub fn local_endpoints<'a>(endpoints: &'a [Endpoint], family: IpFamily, node: &NodeContext) -> Selection<'a> {
    let local: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| {
            IpFamily::of(&e.address) == family && e.node_name.as_deref() == Some(node.node_name.as_str())
        })
        .collect();
    let ready: Vec<&Endpoint> = local.iter().copied().filter(|e| e.conditions.ready).collect();
    if !ready.is_empty() {
        return Selection { endpoints: ready, reason: SelectionReason::Ready };
    }
    fallback(local)
}

fn fallback(candidates: Vec<&Endpoint>) -> Selection<'_> {
    let terminating: Vec<&Endpoint> =
        candidates.into_iter().filter(|e| e.conditions.serving && e.conditions.terminating).collect();
    if terminating.is_empty() {
        Selection { endpoints: Vec::new(), reason: SelectionReason::NoEndpoints }
    } else {
        Selection { endpoints: terminating, reason: SelectionReason::TerminatingFallback }
    }
}

/// kube-proxy's topology rule (`topologyModeFromHints`): when every ready endpoint has node
/// hints and one names this node, the endpoints hinted for this node; else, when every ready
/// endpoint has zone hints and one names this node's zone, the endpoints hinted for the zone;
/// else `None`, and hints are ignored.
pub fn topology_filter<'a>(ready: &[&'a Endpoint], node: &NodeContext) -> Option<Vec<&'a Endpoint>> {
    let by = |hints: fn(&Endpoint) -> &[String], wanted: Option<&str>| {
        let wanted = wanted?;
        if ready.iter().any(|e| hints(e).is_empty())
            || !ready.iter().any(|e| hints(e).iter().any(|h| h == wanted))
        {
            return None;
        }
        Some(ready.iter().copied().filter(|e| hints(e).iter().any(|h| h == wanted)).collect())
    };
    by(|e| &e.hints.for_nodes, Some(node.node_name.as_str()))
        .or_else(|| by(|e| &e.hints.for_zones, node.zone.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conditions, Hints};

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            address: ip.parse().unwrap(),
            port: 8080,
            conditions: Conditions { ready, serving, terminating },
            node_name: None,
            zone: None,
            hints: Hints::default(),
        }
    }

    fn node() -> NodeContext {
        NodeContext { zone: Some("zone-a".into()), ..NodeContext::new("node1") }
    }

    fn on(mut e: Endpoint, node: &str, zones: &[&str], nodes: &[&str]) -> Endpoint {
        e.node_name = Some(node.into());
        e.hints = Hints {
            for_zones: zones.iter().map(|z| z.to_string()).collect(),
            for_nodes: nodes.iter().map(|n| n.to_string()).collect(),
        };
        e
    }

    #[test]
    fn local_selection_should_take_this_nodes_ready_endpoints_else_its_terminating_ones() {
        let eps = [
            on(ep("10.0.0.1", true, true, false), "node2", &[], &[]),
            on(ep("10.0.0.2", false, true, true), "node1", &[], &[]),
            on(ep("10.0.0.3", false, false, true), "node1", &[], &[]),
        ];
        let s = local_endpoints(&eps, IpFamily::V4, &node());
        assert_eq!(addresses(&s), ["10.0.0.2"]);
        assert_eq!(s.reason, SelectionReason::TerminatingFallback);
        let eps = [on(ep("10.0.0.1", true, true, false), "node2", &[], &[])];
        assert_eq!(local_endpoints(&eps, IpFamily::V4, &node()).reason, SelectionReason::NoEndpoints);
    }

    #[test]
    fn topology_should_apply_only_when_every_endpoint_is_hinted_and_one_hint_matches() {
        let a = |ip, zones: &[&str]| on(ep(ip, true, true, false), "x", zones, &[]);
        let all_hinted =
            [a("10.0.0.1", &["zone-a"]), a("10.0.0.2", &["zone-b"]), a("10.0.0.3", &["zone-a", "zone-b"])];
        assert_eq!(
            addresses(&cluster_endpoints(&all_hinted, IpFamily::V4, &node())),
            ["10.0.0.1", "10.0.0.3"]
        );
        let one_unhinted = [a("10.0.0.1", &["zone-a"]), a("10.0.0.2", &[])];
        assert_eq!(
            addresses(&cluster_endpoints(&one_unhinted, IpFamily::V4, &node())).len(),
            2,
            "hints ignored"
        );
        let none_match = [a("10.0.0.1", &["zone-b"]), a("10.0.0.2", &["zone-c"])];
        assert_eq!(
            addresses(&cluster_endpoints(&none_match, IpFamily::V4, &node())).len(),
            2,
            "hints ignored"
        );
        let for_node = [
            on(ep("10.0.0.1", true, true, false), "x", &["zone-b"], &["node1"]),
            on(ep("10.0.0.2", true, true, false), "x", &["zone-a"], &["node2"]),
        ];
        assert_eq!(
            addresses(&cluster_endpoints(&for_node, IpFamily::V4, &node())),
            ["10.0.0.1"],
            "node hints first"
        );
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
        let s = cluster_endpoints(&eps, IpFamily::V4, &node());
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
        let s = cluster_endpoints(&eps, IpFamily::V4, &node());
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
        let s = cluster_endpoints(&eps, IpFamily::V4, &node());
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
        assert_eq!(addresses(&cluster_endpoints(&eps, IpFamily::V4, &node())), ["10.0.0.1"]);
        assert_eq!(addresses(&cluster_endpoints(&eps, IpFamily::V6, &node())), ["fd00::1"]);
    }
}
