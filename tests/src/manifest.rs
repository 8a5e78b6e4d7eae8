//! Kubernetes manifests for the agent's `--manifests` directory: small builders for a
//! [`Service`] (ClusterIP, NodePort or LoadBalancer, single- or dual-stack, with its policies), an
//! [`EndpointSlice`] (IPv4 or IPv6, endpoints with node, zone and hints), the [`Node`] the agent
//! runs as, and a [`ManifestDir`] that writes them atomically.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::client::Protocol;
use crate::pod::Pod;

/// Anything that renders as one YAML document.
pub trait Manifest {
    /// The YAML document, without a leading `---`.
    fn to_yaml(&self) -> String;
}

/// An address family, as in `ipFamilies` and an EndpointSlice's `addressType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `address`.
    #[must_use]
    pub fn of(address: &IpAddr) -> Self {
        if address.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// The name Kubernetes uses (`IPv4`, `IPv6`).
    #[must_use]
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// One port of a Service: `name`, `port`, `protocol`, `targetPort` and maybe `nodePort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name; the agent matches it against the EndpointSlice port of the same name.
    pub name: String,
    /// The Service (frontend) port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The endpoints' port.
    pub target_port: u16,
    /// `nodePort`, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
}

impl ServicePort {
    /// A TCP port `port` named `name` forwarding to `target_port`.
    #[must_use]
    pub fn tcp(name: &str, port: u16, target_port: u16) -> Self {
        Self { name: name.to_owned(), port, protocol: Protocol::Tcp, target_port, node_port: None }
    }

    /// A UDP port `port` named `name` forwarding to `target_port`.
    #[must_use]
    pub fn udp(name: &str, port: u16, target_port: u16) -> Self {
        Self { name: name.to_owned(), port, protocol: Protocol::Udp, target_port, node_port: None }
    }

    /// Sets `nodePort`.
    #[must_use]
    pub fn node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }
}

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    /// `ClusterIP`: reachable on its cluster IPs (and external IPs).
    #[default]
    ClusterIp,
    /// `NodePort`: also on every port's `nodePort` of the node's addresses.
    NodePort,
    /// `LoadBalancer`: also on `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses.
    #[must_use]
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Any ready endpoint, on any node.
    Cluster,
    /// Only endpoints on this node.
    Local,
}

impl TrafficPolicy {
    /// The name Kubernetes uses.
    #[must_use]
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            Self::Cluster => "Cluster",
            Self::Local => "Local",
        }
    }
}

/// One `status.loadBalancer.ingress[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerIngress {
    /// `ip`.
    pub ip: IpAddr,
    /// `ipMode` (`VIP` or `Proxy`); absent means `VIP`.
    pub ip_mode: Option<String>,
}

/// A `v1` Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// `spec.clusterIPs`; the first is `spec.clusterIP`, at most one per family.
    pub cluster_ips: Vec<IpAddr>,
    /// The ports.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress`.
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// `spec.loadBalancerSourceRanges` (CIDRs).
    pub load_balancer_source_ranges: Vec<String>,
    /// `spec.externalTrafficPolicy`, when set.
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// `spec.internalTrafficPolicy`, when set.
    pub internal_traffic_policy: Option<TrafficPolicy>,
    /// `sessionAffinity: ClientIP` when `Some`, with `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// when the inner value is `Some`.
    pub client_ip_affinity: Option<Option<u32>>,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<u16>,
}

fn parse_ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|_| panic!("not an IP address: {text}"))
}

impl Service {
    /// A ClusterIP Service `namespace/name` with cluster IP `cluster_ip` (IPv4 or IPv6) and no
    /// ports yet.
    ///
    /// # Panics
    /// If `cluster_ip` is not an IP address.
    #[must_use]
    pub fn cluster_ip(namespace: &str, name: &str, cluster_ip: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![parse_ip(cluster_ip)],
            ports: Vec::new(),
            external_ips: Vec::new(),
            load_balancer_ingress: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            external_traffic_policy: None,
            internal_traffic_policy: None,
            client_ip_affinity: None,
            health_check_node_port: None,
        }
    }

    /// A NodePort Service (give its ports a [`ServicePort::node_port`]).
    ///
    /// # Panics
    /// If `cluster_ip` is not an IP address.
    #[must_use]
    pub fn node_port(namespace: &str, name: &str, cluster_ip: &str) -> Self {
        Self::cluster_ip(namespace, name, cluster_ip).with_type(ServiceType::NodePort)
    }

    /// A LoadBalancer Service (give its ports a [`ServicePort::node_port`] and it an ingress IP
    /// with [`Service::load_balancer_ip`]).
    ///
    /// # Panics
    /// If `cluster_ip` is not an IP address.
    #[must_use]
    pub fn load_balancer(namespace: &str, name: &str, cluster_ip: &str) -> Self {
        Self::cluster_ip(namespace, name, cluster_ip).with_type(ServiceType::LoadBalancer)
    }

    /// Sets `spec.type`.
    #[must_use]
    pub fn with_type(mut self, service_type: ServiceType) -> Self {
        self.service_type = service_type;
        self
    }

    /// Adds the cluster IP of the other family: the Service becomes dual-stack
    /// (`ipFamilyPolicy: RequireDualStack`).
    ///
    /// # Panics
    /// If `cluster_ip` is not an IP address, or the Service has one of its family already.
    #[must_use]
    pub fn second_cluster_ip(mut self, cluster_ip: &str) -> Self {
        let address = parse_ip(cluster_ip);
        assert!(
            self.cluster_ips.iter().all(|ip| IpFamily::of(ip) != IpFamily::of(&address)),
            "service {} has an {} cluster IP already",
            self.name,
            IpFamily::of(&address).kubernetes_name()
        );
        self.cluster_ips.push(address);
        self
    }

    /// Adds a port.
    #[must_use]
    pub fn port(mut self, port: ServicePort) -> Self {
        self.ports.push(port);
        self
    }

    /// Adds an address to `spec.externalIPs`.
    ///
    /// # Panics
    /// If `ip` is not an IP address.
    #[must_use]
    pub fn external_ip(mut self, ip: &str) -> Self {
        self.external_ips.push(parse_ip(ip));
        self
    }

    /// Adds `status.loadBalancer.ingress[] {ip}` (ipMode unset, i.e. VIP).
    ///
    /// # Panics
    /// If `ip` is not an IP address.
    #[must_use]
    pub fn load_balancer_ip(mut self, ip: &str) -> Self {
        self.load_balancer_ingress.push(LoadBalancerIngress { ip: parse_ip(ip), ip_mode: None });
        self
    }

    /// Adds `status.loadBalancer.ingress[] {ip, ipMode: Proxy}`: the load balancer proxies, so
    /// the node must not capture this address.
    ///
    /// # Panics
    /// If `ip` is not an IP address.
    #[must_use]
    pub fn load_balancer_proxy_ip(mut self, ip: &str) -> Self {
        self.load_balancer_ingress
            .push(LoadBalancerIngress { ip: parse_ip(ip), ip_mode: Some("Proxy".to_owned()) });
        self
    }

    /// Adds a CIDR to `spec.loadBalancerSourceRanges`.
    #[must_use]
    pub fn source_range(mut self, cidr: &str) -> Self {
        self.load_balancer_source_ranges.push(cidr.to_owned());
        self
    }

    /// Sets `spec.externalTrafficPolicy`.
    #[must_use]
    pub fn external_traffic_policy(mut self, policy: TrafficPolicy) -> Self {
        self.external_traffic_policy = Some(policy);
        self
    }

    /// Sets `spec.internalTrafficPolicy`.
    #[must_use]
    pub fn internal_traffic_policy(mut self, policy: TrafficPolicy) -> Self {
        self.internal_traffic_policy = Some(policy);
        self
    }

    /// Sets `sessionAffinity: ClientIP`, with `sessionAffinityConfig.clientIP.timeoutSeconds`
    /// when `timeout_seconds` is given (Kubernetes' default is 10800).
    #[must_use]
    pub fn client_ip_affinity(mut self, timeout_seconds: Option<u32>) -> Self {
        self.client_ip_affinity = Some(timeout_seconds);
        self
    }

    /// Removes session affinity (`sessionAffinity: None`).
    #[must_use]
    pub fn without_affinity(mut self) -> Self {
        self.client_ip_affinity = None;
        self
    }

    /// Sets `spec.healthCheckNodePort`.
    #[must_use]
    pub fn health_check_node_port(mut self, port: u16) -> Self {
        self.health_check_node_port = Some(port);
        self
    }

    /// The Service port named `port_name`.
    ///
    /// # Panics
    /// If there is no such port.
    #[must_use]
    pub fn service_port(&self, port_name: &str) -> &ServicePort {
        self.ports
            .iter()
            .find(|port| port.name == port_name)
            .unwrap_or_else(|| panic!("service {} has no port named {port_name:?}", self.name))
    }

    /// The socket address of the Service port named `port_name` on its first cluster IP.
    ///
    /// # Panics
    /// If there is no such port.
    #[must_use]
    pub fn address(&self, port_name: &str) -> SocketAddr {
        (self.cluster_ips[0], self.service_port(port_name).port).into()
    }

    /// The socket address of the port named `port_name` on the cluster IP of `family`.
    ///
    /// # Panics
    /// If there is no such port or no cluster IP of that family.
    #[must_use]
    pub fn address_of_family(&self, family: IpFamily, port_name: &str) -> SocketAddr {
        let ip = self.cluster_ips.iter().find(|ip| IpFamily::of(ip) == family).unwrap_or_else(|| {
            panic!("service {} has no {} cluster IP", self.name, family.kubernetes_name())
        });
        (*ip, self.service_port(port_name).port).into()
    }

    /// `ip` with the Service port of `port_name`: an external or load-balancer IP frontend.
    ///
    /// # Panics
    /// If there is no such port.
    #[must_use]
    pub fn address_on(&self, ip: impl Into<IpAddr>, port_name: &str) -> SocketAddr {
        (ip.into(), self.service_port(port_name).port).into()
    }

    /// `node_ip` with the `nodePort` of `port_name`.
    ///
    /// # Panics
    /// If there is no such port or it has no node port.
    #[must_use]
    pub fn node_port_on(&self, node_ip: impl Into<IpAddr>, port_name: &str) -> SocketAddr {
        let port = self.service_port(port_name);
        let node_port =
            port.node_port.unwrap_or_else(|| panic!("port {port_name:?} of {} has no nodePort", self.name));
        (node_ip.into(), node_port).into()
    }

    fn families(&self) -> Vec<IpFamily> {
        self.cluster_ips.iter().map(IpFamily::of).collect()
    }
}

/// Writes `  key: ["a", "b"]\n` (indentation `indent`).
fn write_list(yaml: &mut String, indent: &str, key: &str, items: impl IntoIterator<Item = String>) {
    let quoted: Vec<String> = items.into_iter().map(|item| format!("\"{item}\"")).collect();
    let _ = writeln!(yaml, "{indent}{key}: [{}]", quoted.join(", "));
}

impl Manifest for Service {
    fn to_yaml(&self) -> String {
        let families = self.families();
        let mut yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"{}\"\n  namespace: \"{}\"\n\
             spec:\n  type: {}\n  clusterIP: \"{}\"\n",
            self.name,
            self.namespace,
            self.service_type.kubernetes_name(),
            self.cluster_ips[0],
        );
        write_list(&mut yaml, "  ", "clusterIPs", self.cluster_ips.iter().map(IpAddr::to_string));
        write_list(&mut yaml, "  ", "ipFamilies", families.iter().map(|f| f.kubernetes_name().to_owned()));
        if families.len() > 1 {
            yaml.push_str("  ipFamilyPolicy: RequireDualStack\n");
        } else if families != [IpFamily::V4] {
            yaml.push_str("  ipFamilyPolicy: SingleStack\n");
        }
        yaml.push_str(if self.ports.is_empty() { "  ports: []\n" } else { "  ports:\n" });
        for port in &self.ports {
            let _ = write!(
                yaml,
                "  - name: \"{}\"\n    port: {}\n    protocol: {}\n    targetPort: {}\n",
                port.name,
                port.port,
                port.protocol.kubernetes_name(),
                port.target_port
            );
            if let Some(node_port) = port.node_port {
                let _ = writeln!(yaml, "    nodePort: {node_port}");
            }
        }
        if !self.external_ips.is_empty() {
            write_list(&mut yaml, "  ", "externalIPs", self.external_ips.iter().map(IpAddr::to_string));
        }
        if !self.load_balancer_source_ranges.is_empty() {
            write_list(&mut yaml, "  ", "loadBalancerSourceRanges", self.load_balancer_source_ranges.clone());
        }
        if let Some(policy) = self.external_traffic_policy {
            let _ = writeln!(yaml, "  externalTrafficPolicy: {}", policy.kubernetes_name());
        }
        if let Some(policy) = self.internal_traffic_policy {
            let _ = writeln!(yaml, "  internalTrafficPolicy: {}", policy.kubernetes_name());
        }
        if let Some(timeout) = self.client_ip_affinity {
            yaml.push_str("  sessionAffinity: ClientIP\n");
            if let Some(seconds) = timeout {
                let _ = writeln!(
                    yaml,
                    "  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {seconds}"
                );
            }
        }
        if let Some(port) = self.health_check_node_port {
            let _ = writeln!(yaml, "  healthCheckNodePort: {port}");
        }
        if !self.load_balancer_ingress.is_empty() {
            yaml.push_str("status:\n  loadBalancer:\n    ingress:\n");
            for ingress in &self.load_balancer_ingress {
                let _ = writeln!(yaml, "    - ip: \"{}\"", ingress.ip);
                if let Some(mode) = &ingress.ip_mode {
                    let _ = writeln!(yaml, "      ipMode: {mode}");
                }
            }
        }
        yaml
    }
}

/// One port of an EndpointSlice: `name`, `port`, `protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// Must equal the name of the Service port it serves.
    pub name: String,
    /// The port the endpoints listen on.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// One endpoint: an address, its conditions, its node (`node1` unless set) and topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's address; its family must match the slice's `addressType`.
    pub address: IpAddr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: String,
    /// `zone`, when set.
    pub zone: Option<String>,
    /// `hints.forZones[].name`.
    pub for_zones: Vec<String>,
    /// `hints.forNodes[].name`.
    pub for_nodes: Vec<String>,
}

impl Endpoint {
    /// An endpoint with explicit conditions, on node `node1`.
    #[must_use]
    pub fn with_conditions(
        address: impl Into<IpAddr>,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> Self {
        Self {
            address: address.into(),
            ready,
            serving,
            terminating,
            node_name: crate::NODE_NAME.to_owned(),
            zone: None,
            for_zones: Vec::new(),
            for_nodes: Vec::new(),
        }
    }

    /// Ready and serving, not terminating: gets traffic.
    #[must_use]
    pub fn ready(address: impl Into<IpAddr>) -> Self {
        Self::with_conditions(address, true, true, false)
    }

    /// Not ready, not serving, not terminating (a pod still starting): never gets traffic.
    #[must_use]
    pub fn not_ready(address: impl Into<IpAddr>) -> Self {
        Self::with_conditions(address, false, false, false)
    }

    /// Terminating but still serving: gets traffic only when no endpoint is ready.
    #[must_use]
    pub fn serving_terminating(address: impl Into<IpAddr>) -> Self {
        Self::with_conditions(address, false, true, true)
    }

    /// Terminating and no longer serving: never gets traffic.
    #[must_use]
    pub fn terminating_not_serving(address: impl Into<IpAddr>) -> Self {
        Self::with_conditions(address, false, false, true)
    }

    /// `pod` as a ready endpoint: its IPv4 address, on the node it runs on.
    #[must_use]
    pub fn of(pod: &Pod) -> Self {
        Self::ready(pod.ip()).on_node(pod.node_name())
    }

    /// `pod` as a ready endpoint of an IPv6 slice: its IPv6 address, on the node it runs on.
    #[must_use]
    pub fn of_v6(pod: &Pod) -> Self {
        Self::ready(pod.ip6()).on_node(pod.node_name())
    }

    /// Sets `nodeName`.
    #[must_use]
    pub fn on_node(mut self, node_name: &str) -> Self {
        node_name.clone_into(&mut self.node_name);
        self
    }

    /// Sets `zone`.
    #[must_use]
    pub fn in_zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_owned());
        self
    }

    /// Sets `hints.forZones`.
    #[must_use]
    pub fn hint_zones(mut self, zones: &[&str]) -> Self {
        self.for_zones = zones.iter().map(|zone| (*zone).to_owned()).collect();
        self
    }

    /// Sets `hints.forNodes`.
    #[must_use]
    pub fn hint_nodes(mut self, nodes: &[&str]) -> Self {
        self.for_nodes = nodes.iter().map(|node| (*node).to_owned()).collect();
        self
    }
}

/// A `discovery.k8s.io/v1` EndpointSlice (`addressType: IPv4` or `IPv6`) of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Kubernetes namespace (the Service's).
    pub namespace: String,
    /// The slice's own name.
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service_name: String,
    /// `addressType`.
    pub address_type: IpFamily,
    /// The ports.
    pub ports: Vec<EndpointPort>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl EndpointSlice {
    /// An empty IPv4 slice for `service`, named `<service>-1`, with one port per Service port
    /// (same name and protocol, `port` = the Service port's `targetPort`).
    #[must_use]
    pub fn for_service(service: &Service) -> Self {
        Self {
            namespace: service.namespace.clone(),
            name: format!("{}-1", service.name),
            service_name: service.name.clone(),
            address_type: IpFamily::V4,
            ports: service
                .ports
                .iter()
                .map(|port| EndpointPort {
                    name: port.name.clone(),
                    port: port.target_port,
                    protocol: port.protocol,
                })
                .collect(),
            endpoints: Vec::new(),
        }
    }

    /// Like [`EndpointSlice::for_service`], but `addressType: IPv6` and named `<service>-v6`.
    #[must_use]
    pub fn for_service_v6(service: &Service) -> Self {
        let mut slice = Self::for_service(service);
        slice.address_type = IpFamily::V6;
        slice.name = format!("{}-v6", service.name);
        slice
    }

    /// Renames the slice (a Service may have several).
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Adds an endpoint.
    #[must_use]
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds several endpoints.
    #[must_use]
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }
}

impl Manifest for EndpointSlice {
    fn to_yaml(&self) -> String {
        let mut yaml = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: \"{}\"\n  \
             namespace: \"{}\"\n  labels:\n    kubernetes.io/service-name: \"{}\"\naddressType: {}\n",
            self.name,
            self.namespace,
            self.service_name,
            self.address_type.kubernetes_name()
        );
        yaml.push_str(if self.ports.is_empty() { "ports: []\n" } else { "ports:\n" });
        for port in &self.ports {
            let _ = write!(
                yaml,
                "- name: \"{}\"\n  port: {}\n  protocol: {}\n",
                port.name,
                port.port,
                port.protocol.kubernetes_name()
            );
        }
        yaml.push_str(if self.endpoints.is_empty() { "endpoints: []\n" } else { "endpoints:\n" });
        for endpoint in &self.endpoints {
            let _ = write!(
                yaml,
                "- addresses: [\"{}\"]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n  \
                 nodeName: \"{}\"\n",
                endpoint.address, endpoint.ready, endpoint.serving, endpoint.terminating, endpoint.node_name
            );
            if let Some(zone) = &endpoint.zone {
                let _ = writeln!(yaml, "  zone: \"{zone}\"");
            }
            if !endpoint.for_zones.is_empty() || !endpoint.for_nodes.is_empty() {
                yaml.push_str("  hints:\n");
                for (key, names) in [("forZones", &endpoint.for_zones), ("forNodes", &endpoint.for_nodes)] {
                    if !names.is_empty() {
                        let entries: Vec<String> =
                            names.iter().map(|name| format!("{{name: \"{name}\"}}")).collect();
                        let _ = writeln!(yaml, "    {key}: [{}]", entries.join(", "));
                    }
                }
            }
        }
        yaml
    }
}

/// A `v1` Node: the agent reads its own (`--hostname-override`) for its addresses (NodePorts are
/// served on the primary ones by default) and its zone (topology hints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`, in order.
    pub labels: Vec<(String, String)>,
    /// `status.addresses[]` of type `InternalIP`, in order.
    pub internal_ips: Vec<IpAddr>,
}

impl Node {
    /// A Node `name` without labels or addresses.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), labels: Vec::new(), internal_ips: Vec::new() }
    }

    /// The lab's node as the agent runs it: `node1`, zone `zone-a`, InternalIPs
    /// 192.168.100.2 and fd00:192:168:100::2 (the node's uplink addresses).
    #[must_use]
    pub fn lab_node() -> Self {
        Self::new(crate::NODE_NAME)
            .zone(crate::lab::NODE_ZONE)
            .internal_ip(crate::NODE_UPLINK_IP)
            .internal_ip(crate::lab::NODE_UPLINK_IP6)
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds the label `topology.kubernetes.io/zone`.
    #[must_use]
    pub fn zone(self, zone: &str) -> Self {
        self.label("topology.kubernetes.io/zone", zone)
    }

    /// Adds an `InternalIP` address.
    #[must_use]
    pub fn internal_ip(mut self, ip: impl Into<IpAddr>) -> Self {
        self.internal_ips.push(ip.into());
        self
    }
}

impl Manifest for Node {
    fn to_yaml(&self) -> String {
        let mut yaml = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: \"{}\"\n", self.name);
        if !self.labels.is_empty() {
            yaml.push_str("  labels:\n");
            for (key, value) in &self.labels {
                let _ = writeln!(yaml, "    {key}: \"{value}\"");
            }
        }
        yaml.push_str(if self.internal_ips.is_empty() {
            "status:\n  addresses: []\n"
        } else {
            "status:\n  addresses:\n"
        });
        for ip in &self.internal_ips {
            let _ = writeln!(yaml, "  - type: InternalIP\n    address: \"{ip}\"");
        }
        yaml
    }
}

/// The directory the agent watches (`--manifests`). Every write is atomic: the documents go to
/// a hidden temporary file in the same directory, which is then renamed over the target, so the
/// agent never reads half a file.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    path: PathBuf,
}

impl ManifestDir {
    /// Uses (and creates) the directory `path`.
    ///
    /// # Panics
    /// If the directory cannot be created.
    #[must_use]
    pub fn create(path: PathBuf) -> Self {
        fs::create_dir_all(&path).unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        Self { path }
    }

    /// The directory, to pass as `--manifests`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `documents` as one multi-document YAML file `file` (e.g. `web.yaml`), atomically.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write(&self, file: &str, documents: &[&dyn Manifest]) {
        let text =
            documents.iter().map(|document| format!("---\n{}", document.to_yaml())).collect::<String>();
        self.write_text(file, &text);
    }

    /// Writes raw text as file `file`, atomically.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_text(&self, file: &str, text: &str) {
        let target = self.path.join(file);
        let temporary = self.path.join(format!(".{file}.tmp"));
        fs::write(&temporary, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", temporary.display()));
        fs::rename(&temporary, &target)
            .unwrap_or_else(|error| panic!("cannot rename to {}: {error}", target.display()));
    }

    /// Removes file `file`.
    ///
    /// # Panics
    /// If the file cannot be removed.
    pub fn remove(&self, file: &str) {
        let target = self.path.join(file);
        fs::remove_file(&target)
            .unwrap_or_else(|error| panic!("cannot remove {}: {error}", target.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Service {
        Service::cluster_ip("default", "web", "10.96.0.10").port(ServicePort::tcp("http", 80, 8080))
    }

    #[test]
    fn service_should_render_cluster_ip_and_ports() {
        let yaml = web().port(ServicePort::udp("dns", 53, 5301)).to_yaml();
        assert_eq!(
            yaml,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"web\"\n  namespace: \"default\"\n\
             spec:\n  type: ClusterIP\n  clusterIP: \"10.96.0.10\"\n  clusterIPs: [\"10.96.0.10\"]\n  \
             ipFamilies: [\"IPv4\"]\n  ports:\n  - name: \"http\"\n    port: 80\n    protocol: TCP\n    \
             targetPort: 8080\n  - name: \"dns\"\n    port: 53\n    protocol: UDP\n    targetPort: 5301\n"
        );
    }

    #[test]
    fn endpoint_slice_should_render_conditions_and_label() {
        let slice = EndpointSlice::for_service(&web())
            .endpoint(Endpoint::serving_terminating(std::net::Ipv4Addr::new(10, 244, 0, 11)));
        assert_eq!(
            slice.to_yaml(),
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: \"web-1\"\n  \
             namespace: \"default\"\n  labels:\n    kubernetes.io/service-name: \"web\"\naddressType: IPv4\n\
             ports:\n- name: \"http\"\n  port: 8080\n  protocol: TCP\nendpoints:\n\
             - addresses: [\"10.244.0.11\"]\n  conditions: {ready: false, serving: true, terminating: true}\n  \
             nodeName: \"node1\"\n"
        );
    }

    #[test]
    fn endpoint_slice_should_render_no_endpoints_as_an_empty_list() {
        assert!(EndpointSlice::for_service(&web()).to_yaml().ends_with("endpoints: []\n"));
    }

    #[test]
    fn manifest_dir_should_replace_files_atomically() {
        let scratch = tempfile::tempdir().unwrap();
        let directory = ManifestDir::create(scratch.path().join("manifests"));
        directory.write("web.yaml", &[&web()]);
        directory.write("web.yaml", &[&web(), &EndpointSlice::for_service(&web())]);
        let names: Vec<_> =
            fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, ["web.yaml"]);
        let text = fs::read_to_string(directory.path().join("web.yaml")).unwrap();
        assert_eq!(text.matches("---\n").count(), 2);
    }
    /// Parses `yaml` the way the agent does (YAML → JSON value → k8s-openapi type).
    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    #[test]
    fn service_should_render_every_external_frontend_and_policy() {
        use k8s_openapi::api::core::v1::Service as K8sService;
        let service = Service::load_balancer("default", "lb", "10.96.0.80")
            .second_cluster_ip("fd00:10:96::80")
            .port(ServicePort::tcp("http", 80, 8080).node_port(30080))
            .external_ip("203.0.113.20")
            .load_balancer_ip("203.0.113.10")
            .load_balancer_proxy_ip("203.0.113.11")
            .source_range("192.168.200.2/32")
            .external_traffic_policy(TrafficPolicy::Local)
            .internal_traffic_policy(TrafficPolicy::Local)
            .client_ip_affinity(Some(2))
            .health_check_node_port(32000);
        let parsed: K8sService = parse(&service.to_yaml());
        let spec = parsed.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.cluster_ips.unwrap(), ["10.96.0.80", "fd00:10:96::80"]);
        assert_eq!(spec.ip_families.unwrap(), ["IPv4", "IPv6"]);
        assert_eq!(spec.ip_family_policy.as_deref(), Some("RequireDualStack"));
        assert_eq!(spec.ports.unwrap()[0].node_port, Some(30080));
        assert_eq!(spec.external_ips.unwrap(), ["203.0.113.20"]);
        assert_eq!(spec.load_balancer_source_ranges.unwrap(), ["192.168.200.2/32"]);
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
        let timeout = spec.session_affinity_config.unwrap().client_ip.unwrap().timeout_seconds;
        assert_eq!(timeout, Some(2));
        assert_eq!(spec.health_check_node_port, Some(32000));
        let ingress = parsed.status.unwrap().load_balancer.unwrap().ingress.unwrap();
        let ingress: Vec<_> = ingress.iter().map(|i| (i.ip.clone().unwrap(), i.ip_mode.clone())).collect();
        assert_eq!(
            ingress,
            [("203.0.113.10".to_owned(), None), ("203.0.113.11".to_owned(), Some("Proxy".to_owned()))]
        );
        assert_eq!(service.node_port_on(crate::NODE_UPLINK_IP, "http").to_string(), "192.168.100.2:30080");
        assert_eq!(service.address_of_family(IpFamily::V6, "http").to_string(), "[fd00:10:96::80]:80");
    }

    #[test]
    fn service_should_render_an_ipv6_only_service_as_single_stack() {
        use k8s_openapi::api::core::v1::Service as K8sService;
        let service =
            Service::cluster_ip("default", "v6", "fd00:10:96::10").port(ServicePort::tcp("http", 80, 8080));
        let spec = parse::<K8sService>(&service.to_yaml()).spec.unwrap();
        assert_eq!(spec.ip_families.unwrap(), ["IPv6"]);
        assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
        assert_eq!(service.address("http").to_string(), "[fd00:10:96::10]:80");
    }

    #[test]
    fn endpoint_slice_should_render_ipv6_node_zone_and_hints() {
        use k8s_openapi::api::discovery::v1::EndpointSlice as K8sSlice;
        let slice = EndpointSlice::for_service_v6(&web())
            .endpoint(
                Endpoint::ready("fd00:10:244:2::11".parse::<IpAddr>().unwrap())
                    .on_node("node2")
                    .in_zone("zone-b")
                    .hint_zones(&["zone-a", "zone-b"])
                    .hint_nodes(&["node1"]),
            )
            .endpoint(Endpoint::ready("fd00:10:244::12".parse::<IpAddr>().unwrap()));
        let parsed: K8sSlice = parse(&slice.to_yaml());
        assert_eq!(parsed.address_type, "IPv6");
        assert_eq!(parsed.metadata.name.as_deref(), Some("web-v6"));
        let first = &parsed.endpoints[0];
        assert_eq!(first.addresses, ["fd00:10:244:2::11"]);
        assert_eq!(first.node_name.as_deref(), Some("node2"));
        assert_eq!(first.zone.as_deref(), Some("zone-b"));
        let hints = first.hints.clone().unwrap();
        let zones: Vec<_> = hints.for_zones.unwrap().into_iter().map(|z| z.name).collect();
        let nodes: Vec<_> = hints.for_nodes.unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(
            (zones, nodes),
            (vec!["zone-a".to_owned(), "zone-b".to_owned()], vec!["node1".to_owned()])
        );
        assert!(parsed.endpoints[1].hints.is_none());
        assert_eq!(parsed.endpoints[1].node_name.as_deref(), Some("node1"));
    }

    #[test]
    fn node_should_render_zone_label_and_internal_ips() {
        let parsed: k8s_openapi::api::core::v1::Node = parse(&Node::lab_node().to_yaml());
        assert_eq!(parsed.metadata.name.as_deref(), Some("node1"));
        let labels = parsed.metadata.labels.unwrap();
        assert_eq!(labels.get("topology.kubernetes.io/zone").map(String::as_str), Some("zone-a"));
        let addresses: Vec<_> =
            parsed.status.unwrap().addresses.unwrap().into_iter().map(|a| (a.type_, a.address)).collect();
        assert_eq!(
            addresses,
            [
                ("InternalIP".to_owned(), "192.168.100.2".to_owned()),
                ("InternalIP".to_owned(), "fd00:192:168:100::2".to_owned())
            ]
        );
    }
}
