//! Every name kproxy gives an nftables object, in one place.
//!
//! Names use only `[a-z0-9-]`, so they never need quoting; no Service name is ever part of an
//! object name (Services appear in element comments instead), which keeps names short, fixed
//! and free of the hashing and truncation kube-proxy needs for its per-Service chains.

use crate::model::{Protocol, ServicePortName};

/// kproxy's table, one per family (`ip kproxy`, `ip6 kproxy`).
pub const TABLE: &str = "kproxy";

/// Base chain: DNAT for packets arriving from interfaces (pods, other hosts).
pub const NAT_PREROUTING: &str = "nat-prerouting";
/// Base chain: DNAT for packets the node itself sends.
pub const NAT_OUTPUT: &str = "nat-output";
/// Base chain: masquerade for hairpin connections.
pub const NAT_POSTROUTING: &str = "nat-postrouting";
/// Base chain: rejects for routed packets (pods' traffic).
pub const FILTER_FORWARD: &str = "filter-forward";
/// Base chain: rejects for the node's own traffic.
pub const FILTER_OUTPUT: &str = "filter-output";
/// Dispatch: frontend (address . protocol . port) to the chain that picks an endpoint.
pub const SERVICES: &str = "services";
/// Rejects new connections to frontends that have no endpoints.
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
/// Rejects new connections to ports a ClusterIP does not serve.
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
/// Rejects a new connection: a TCP reset for TCP, ICMP port-unreachable otherwise. A chain,
/// since a verdict map cannot carry `reject` itself.
pub const REJECT_CHAIN: &str = "reject-chain";

/// Verdict map: frontend → `goto pick-<proto>-<count>`.
pub const SERVICE_IPS: &str = "service-ips";
/// Verdict map: frontend without endpoints → `goto reject-chain`.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Set: every ClusterIP.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set: endpoint address . endpoint address, for masquerading a pod that reaches itself.
pub const HAIRPIN: &str = "hairpin";

/// The map from frontend and slot to endpoint address and port, one per protocol (nft cannot
/// share one map's `tcp dport` data with UDP rules: nft-shapes.md §6, trap 2).
pub fn endpoints_map(protocol: Protocol) -> String {
    format!("endpoints-{protocol}")
}

/// The shared chain that picks one of `count` endpoints of a `protocol` frontend.
pub fn pick_chain(protocol: Protocol, count: usize) -> String {
    format!("pick-{protocol}-{count}")
}

/// The comment on a Service port's elements: `namespace/name:port`, or `namespace/name` for an
/// unnamed port, as kube-proxy writes it.
pub fn port_comment(port: &ServicePortName) -> String {
    if port.port.is_empty() { port.service.to_string() } else { format!("{}:{}", port.service, port.port) }
}
