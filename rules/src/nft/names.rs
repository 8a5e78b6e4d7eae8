//! Every name kproxy gives an nftables object, in one place.
//!
//! Names use only `[a-z0-9-]`, so they never need quoting; no Service name is ever part of an
//! object name (Services appear in element comments instead), which keeps names short, fixed
//! and free of the hashing and truncation kube-proxy needs for its per-Service chains.

use crate::model::{Protocol, ServicePortName};
use crate::sched::Scheduler;

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

/// Chain: marks a packet for masquerading in postrouting.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// Chain: masquerades marked packets, then clears the mark.
pub const MASQUERADING: &str = "masquerading";
/// Base chain: source-range checks before DNAT, for packets arriving from interfaces.
pub const FILTER_PREROUTING: &str = "filter-prerouting";
/// Base chain: source-range checks before DNAT, for the node's own packets.
pub const FILTER_OUTPUT_PRE_DNAT: &str = "filter-output-pre-dnat";
/// Base chain: drops and rejects for packets to this host (node ports).
pub const FILTER_INPUT: &str = "filter-input";
/// Dispatch of load-balancer frontends with source ranges to their firewall chains.
pub const FIREWALL_CHECK: &str = "firewall-check";
/// Drops and rejects new connections to node ports without (local) endpoints.
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";

/// Verdict map: protocol . node port → the chain that picks an endpoint.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Verdict map: protocol . node port without (local) endpoints → reject or drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Verdict map: load-balancer frontend with source ranges → its firewall chain.
pub const FIREWALL_IPS: &str = "firewall-ips";
/// Set: the addresses node ports are served on.
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// Set: external and load-balancer frontends whose traffic is masqueraded (Cluster policy).
pub const MASQUERADE_FRONTENDS: &str = "masquerade-frontends";
/// Set: protocol . node port whose traffic is masqueraded (Cluster policy).
pub const MASQUERADE_NODEPORTS: &str = "masquerade-nodeports";

/// The packet mark bit kproxy masquerades by (kube-proxy's `masqueradeBit` 14).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Which endpoints a shared pick chain chooses among.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every selected endpoint (Cluster policy).
    Cluster,
    /// This node's endpoints (Local policy).
    Local,
}

/// How a shared pick chain keys its endpoint map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keying {
    /// By destination address, protocol and port: cluster, external and load-balancer IPs.
    Address,
    /// By protocol and node port, whatever node address was used.
    NodePort,
}

/// The endpoint map a shared pick chain looks up.
pub fn slot_map(scope: Scope, keying: Keying, protocol: Protocol) -> String {
    format!("{}{}endpoints-{protocol}", scope_prefix(scope), keying_prefix(keying))
}

/// The shared chain that picks one of `slots` slots from [`slot_map`] with `scheduler`:
/// `pick-[local-][nodeport-][sh-|maglev-]<proto>-<slots>`.
pub fn shared_pick_chain(
    scope: Scope,
    keying: Keying,
    protocol: Protocol,
    scheduler: Scheduler,
    slots: usize,
) -> String {
    let algorithm = match scheduler {
        Scheduler::Random | Scheduler::RoundRobin => "",
        Scheduler::SourceHash => "sh-",
        Scheduler::Maglev => "maglev-",
    };
    format!("pick-{}{}{algorithm}{protocol}-{slots}", scope_prefix(scope), keying_prefix(keying))
}

/// The round-robin chain of one Service port (its own `numgen inc` counter):
/// `rr-[local-][nodeport-]<service port>`.
pub fn round_robin_chain(scope: Scope, keying: Keying, port: &crate::model::ServicePort) -> String {
    format!("rr-{}{}{}", scope_prefix(scope), keying_prefix(keying), service_port_id(port))
}

fn scope_prefix(scope: Scope) -> &'static str {
    match scope {
        Scope::Cluster => "",
        Scope::Local => "local-",
    }
}

fn keying_prefix(keying: Keying) -> &'static str {
    match keying {
        Keying::Address => "",
        Keying::NodePort => "nodeport-",
    }
}

/// The identity of a Service port inside object names: `namespace/name/protocol/port`, where
/// port is the port's name or, for an unnamed port, its number. Kubernetes names use only
/// `[a-z0-9.-]` (checked by [`crate::k8s`]), so these are valid nft identifiers, and at most
/// 63 + 253 + 4 + 63 characters plus prefixes: within nft's 256.
pub fn service_port_id(port: &crate::model::ServicePort) -> String {
    let name = &port.name;
    let port_part = if name.port.is_empty() { port.port.to_string() } else { name.port.clone() };
    format!("{}/{}/{}/{}", name.service.namespace, name.service.name, name.protocol, port_part)
}

/// A per-Service-port chain: `<kind>-<namespace/name/protocol/port>`.
pub fn service_port_chain(kind: &str, port: &crate::model::ServicePort) -> String {
    format!("{kind}-{}", service_port_id(port))
}

/// The per-endpoint chain or affinity set of a Service port with ClientIP affinity:
/// `<kind>-<service port>__<address>/<port>`, IPv6 colons written as dots as kube-proxy does.
pub fn endpoint_object(
    kind: &str,
    port: &crate::model::ServicePort,
    endpoint: &crate::model::Endpoint,
) -> String {
    let address = endpoint.address.to_string().replace(':', ".");
    format!("{kind}-{}__{address}/{}", service_port_id(port), endpoint.port)
}
