//! Plain data types of the model.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::sched::Scheduler;

/// A transport protocol a Service port can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP, the Kubernetes default.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The protocol's name as nftables spells it (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(address: &IpAddr) -> IpFamily {
        match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A Service's identity: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service: `namespace/name:port` plus its protocol, as kube-proxy names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    /// The Service the port belongs to.
    pub service: ServiceName,
    /// The port's name; empty for a Service's single unnamed port.
    pub port: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port, self.protocol)
    }
}

/// A Service port with its frontends: the Service's addresses at `port`, and its node port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// The port's identity.
    pub name: ServicePortName,
    /// The port number clients connect to.
    pub port: u16,
    /// The port on every node's addresses, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// What the Service's ports share: addresses and policies.
    pub service: Arc<ServiceInfo>,
}

/// Whether traffic may go to endpoints on any node or only to this node's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// Any ready endpoint, cluster-wide (the default).
    #[default]
    Cluster,
    /// Only endpoints on this node; none there means the traffic is dropped.
    Local,
}

/// The settings a Service's ports share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// The cluster IPs (one per family in a dual-stack Service).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`, except those with `ipMode: Proxy`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`: who may reach the load-balancer IPs; empty means anyone.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.externalTrafficPolicy`, for node ports, external and load-balancer IPs.
    pub external_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`, for the cluster IPs.
    pub internal_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `spec.healthCheckNodePort`, for LoadBalancer Services with the Local external policy.
    pub health_check_node_port: Option<u16>,
    /// The `kproxy.io/scheduler` annotation; `None` means the node's default.
    pub scheduler: Option<Scheduler>,
}

impl ServiceInfo {
    /// Whether the Service has any frontend reached from outside the cluster.
    pub fn has_external_frontends(&self, node_port: Option<u16>) -> bool {
        node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }
}

/// A Service that kproxy proxies (headless and ExternalName Services never become one).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    /// The Service's identity.
    pub name: ServiceName,
    /// Its ports, in the Service's order.
    pub ports: Vec<ServicePort>,
    /// Problems that did not stop the Service from being programmed (an unknown scheduler).
    pub warnings: Vec<String>,
}

/// An endpoint's EndpointSlice conditions, with the API's defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conditions {
    /// `conditions.ready` (absent means true).
    pub ready: bool,
    /// `conditions.serving` (absent means true).
    pub serving: bool,
    /// `conditions.terminating` (absent means false).
    pub terminating: bool,
}

impl Conditions {
    /// A ready, serving, not terminating endpoint.
    pub const READY: Conditions = Conditions { ready: true, serving: true, terminating: false };
}

/// Topology hints of an endpoint: where the EndpointSlice controller wants it used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hints {
    /// `hints.forZones[].name`.
    pub for_zones: Vec<String>,
    /// `hints.forNodes[].name`.
    pub for_nodes: Vec<String>,
}

/// An endpoint as an EndpointSlice lists it: an address, no port yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceEndpoint {
    /// The endpoint's address (the first of its addresses, as kube-proxy does).
    pub address: IpAddr,
    /// Its conditions.
    pub conditions: Conditions,
    /// The node it runs on, when the slice says.
    pub node_name: Option<String>,
    /// The zone it runs in, when the slice says.
    pub zone: Option<String>,
    /// Its topology hints.
    pub hints: Hints,
}

impl SliceEndpoint {
    /// This endpoint reached on `port`.
    pub fn with_port(&self, port: u16) -> Endpoint {
        Endpoint {
            address: self.address,
            port,
            conditions: self.conditions,
            node_name: self.node_name.clone(),
            zone: self.zone.clone(),
            hints: self.hints.clone(),
        }
    }
}

/// One backend of a Service port: an address and resolved target port, with its conditions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The endpoint's address.
    pub address: IpAddr,
    /// The resolved target port.
    pub port: u16,
    /// Its conditions.
    pub conditions: Conditions,
    /// The node it runs on, when the slice says.
    pub node_name: Option<String>,
    /// The zone it runs in, when the slice says.
    pub zone: Option<String>,
    /// Its topology hints.
    pub hints: Hints,
}

/// A port entry of an EndpointSlice: the target port for the Service port of the same name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSlicePort {
    /// The Service port name this entry resolves (empty for an unnamed port).
    pub name: String,
    /// The target port number on the endpoints.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// A validated `discovery.k8s.io/v1` EndpointSlice of one address family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSlice {
    /// The slice's own name (slices are merged in name order).
    pub name: String,
    /// The Service the slice belongs to (`kubernetes.io/service-name`).
    pub service: ServiceName,
    /// The slice's address family.
    pub family: IpFamily,
    /// The slice's ports.
    pub ports: Vec<EndpointSlicePort>,
    /// The slice's endpoints, without their ports (those come from `ports`).
    pub endpoints: Vec<SliceEndpoint>,
}

/// A Service port together with every endpoint its EndpointSlices give it, deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePortEndpoints {
    /// The Service port.
    pub port: ServicePort,
    /// Its endpoints of every family and condition, sorted by address and port.
    pub endpoints: Vec<Endpoint>,
}

/// What the planner knows about the node it plans for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeContext {
    /// The node's name (`--hostname-override`), matched against endpoints' `nodeName`.
    pub node_name: String,
    /// The node's zone (`topology.kubernetes.io/zone`), matched against zone hints.
    pub zone: Option<String>,
    /// The addresses node ports are served on (`--nodeport-addresses`, resolved).
    pub node_port_ips: Vec<IpAddr>,
    /// The pod CIDRs (`--cluster-cidr`): traffic from elsewhere to a cluster IP is masqueraded,
    /// and pods reaching an external frontend of a Local-policy Service get Cluster behaviour.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--masquerade-all`: masquerade all traffic to cluster IPs.
    pub masquerade_all: bool,
    /// The scheduler of Services without a `kproxy.io/scheduler` annotation.
    pub default_scheduler: Scheduler,
}

impl NodeContext {
    /// A node known by name only.
    pub fn new(node_name: impl Into<String>) -> NodeContext {
        NodeContext { node_name: node_name.into(), ..NodeContext::default() }
    }
}
