//! Stale UDP conntrack entries: kube-proxy's conntrack reconciler (v1.32+, with the fix for
//! kubernetes#139628), as a pure function of the programmed Service ports.
//!
//! UDP has no connection to close, so a conntrack entry lives as long as its client keeps
//! sending (`nf_conntrack_udp_timeout`, 30 s, renewed by every packet; 120 s for a stream).
//! Its NAT decision is never taken again: a client that keeps sending from the same source port
//! keeps reaching the endpoint it was first sent to, also after that endpoint left the Service
//! or was replaced, and a Service that went to zero endpoints and back stays blackholed. After
//! every sync the agent therefore deletes the UDP entries that
//!
//! * were sent to a Service **frontend** — a cluster IP, external IP or load-balancer IP at the
//!   Service port, or one of the node's node-port addresses ([`NodeContext::node_port_ips`]) at
//!   the node port — of a UDP Service port, and
//! * whose **reply source** (the DNAT target) is not a **serving** endpoint of that frontend.
//!
//! Nothing else is touched: no TCP or SCTP entry, no entry to another destination (pod to pod,
//! node to the world, a frontend port kproxy does not program), and no entry to an endpoint that
//! still serves. A Service port with zero endpoints is a frontend like any other: every entry to
//! it is stale (v1.32 skipped those, kubernetes#139628).
//!
//! Choices, where kube-proxy leaves room:
//!
//! * **Serving** is `conditions.serving`, as kube-proxy has it, not the narrower set
//!   [`crate::select`] picks for new connections: an endpoint that is terminating but still
//!   serving, or that topology hints or a Local policy no longer pick, may finish the flows it
//!   has; only flows to endpoints that cannot answer are cut.
//! * An endpoint is its address **and target port** (kube-proxy compares the address only), so
//!   a `targetPort` change on the same pods also moves the flows.
//! * A frontend claimed by two Service ports (the model drops conflicting ports, so only in
//!   input built by hand) is served by the endpoints of either: the cleanup errs towards keeping.
//! * Node ports are matched on the node-port addresses only; with none resolved, no node-port
//!   frontend exists (kube-proxy matches the port on any destination address).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

use crate::model::{IpFamily, NodeContext, Protocol, ServicePortEndpoints};

/// An IP protocol number, as conntrack reports an entry's layer-4 protocol (`IPPROTO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP (1).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP (6).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (17).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// SCTP (132).
    pub const SCTP: IpProtocol = IpProtocol(132);

    /// The Service protocol with this number, if it is one.
    pub fn service_protocol(self) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| IpProtocol::from(*p) == self)
    }
}

impl From<Protocol> for IpProtocol {
    fn from(protocol: Protocol) -> IpProtocol {
        match protocol {
            Protocol::Tcp => IpProtocol::TCP,
            Protocol::Udp => IpProtocol::UDP,
            Protocol::Sctp => IpProtocol::SCTP,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.service_protocol() {
            Some(protocol) => protocol.fmt(f),
            None => write!(f, "protocol {}", self.0),
        }
    }
}

/// One direction of a tracked connection. Protocols without ports (ICMP) have port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Where the packets of this direction come from.
    pub source: SocketAddr,
    /// Where they go.
    pub destination: SocketAddr,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.source, self.destination)
    }
}

/// A conntrack entry: the tuple the first packet had, and the tuple replies are expected with.
///
/// For a Service flow the original destination is the frontend and the reply source is the
/// endpoint the flow was DNATed to; a flow without NAT has the two equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// The layer-4 protocol.
    pub protocol: IpProtocol,
    /// The original direction (client to frontend).
    pub original: Tuple,
    /// The reply direction (endpoint to client, or to the node after masquerading).
    pub reply: Tuple,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (reply {})", self.protocol, self.original, self.reply)
    }
}

/// The UDP frontends of a set of Service ports, each with the endpoints that serve it: the
/// index the reconciliation builds once per sync, then asks about every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpFrontends {
    /// Frontend to the indices (into `serving`) of the Service ports that claim it.
    frontends: HashMap<SocketAddr, Vec<usize>>,
    /// Per UDP Service port, its serving endpoints.
    serving: Vec<HashSet<SocketAddr>>,
}

impl UdpFrontends {
    /// Indexes the UDP ports of `ports` for `node` (whose node-port addresses make node-port
    /// frontends). Ports without any serving endpoint are included.
    pub fn new(ports: &[ServicePortEndpoints], node: &NodeContext) -> UdpFrontends {
        let mut index = UdpFrontends::default();
        for port in ports.iter().filter(|p| p.port.name.protocol == Protocol::Udp) {
            let slot = index.serving.len();
            index.serving.push(
                port.endpoints
                    .iter()
                    .filter(|e| e.conditions.serving)
                    .map(|e| SocketAddr::new(e.address, e.port))
                    .collect(),
            );
            let info = &port.port.service;
            let service_addresses: Vec<SocketAddr> = info
                .cluster_ips
                .iter()
                .chain(&info.external_ips)
                .chain(&info.load_balancer_ips)
                .map(|ip| SocketAddr::new(*ip, port.port.port))
                .collect();
            let node_ports: Vec<SocketAddr> = match port.port.node_port {
                Some(node_port) => {
                    node.node_port_ips.iter().map(|ip| SocketAddr::new(*ip, node_port)).collect()
                }
                None => Vec::new(),
            };
            for frontend in service_addresses.into_iter().chain(node_ports) {
                let claims = index.frontends.entry(frontend).or_default();
                if !claims.contains(&slot) {
                    claims.push(slot);
                }
            }
        }
        index
    }

    /// How many frontends (address and port) are indexed.
    pub fn len(&self) -> usize {
        self.frontends.len()
    }

    /// Whether no frontend is indexed (then nothing can be stale).
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// Whether `address` is a UDP frontend.
    pub fn is_frontend(&self, address: &SocketAddr) -> bool {
        self.frontends.contains_key(address)
    }

    /// Whether `entry` is a UDP entry to a frontend whose reply source is none of that
    /// frontend's serving endpoints.
    pub fn is_stale(&self, entry: &Entry) -> bool {
        if entry.protocol != IpProtocol::UDP {
            return false;
        }
        let Some(claims) = self.frontends.get(&entry.original.destination) else {
            return false;
        };
        !claims.iter().any(|slot| self.serving[*slot].contains(&entry.reply.source))
    }

    /// The families of the indexed frontends: the conntrack tables worth listing.
    pub fn families(&self) -> Vec<IpFamily> {
        let mut families: Vec<_> = self.frontends.keys().map(|a| IpFamily::of(&a.ip())).collect();
        families.sort();
        families.dedup();
        families
    }
}

/// The entries of `entries` that are stale for `ports` on `node` (see the module
/// documentation), in their order.
pub fn stale_udp_entries(
    ports: &[ServicePortEndpoints],
    node: &NodeContext,
    entries: &[Entry],
) -> Vec<Entry> {
    let index = UdpFrontends::new(ports, node);
    entries.iter().filter(|e| index.is_stale(e)).copied().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Conditions, Endpoint, Hints, ServiceInfo, ServiceName, ServicePort, ServicePortName};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn endpoint(address: SocketAddr, serving: bool) -> Endpoint {
        Endpoint {
            address: address.ip(),
            port: address.port(),
            conditions: Conditions { ready: serving, serving, terminating: false },
            node_name: None,
            zone: None,
            hints: Hints::default(),
        }
    }

    fn port(
        name: &str,
        protocol: Protocol,
        info: ServiceInfo,
        number: u16,
        node_port: Option<u16>,
        endpoints: Vec<Endpoint>,
    ) -> ServicePortEndpoints {
        let service = ServiceName { namespace: "default".into(), name: name.into() };
        ServicePortEndpoints {
            port: ServicePort {
                name: ServicePortName { service, port: "p".into(), protocol },
                port: number,
                node_port,
                service: Arc::new(info),
            },
            endpoints,
        }
    }

    fn cluster(ip: &str) -> ServiceInfo {
        ServiceInfo { cluster_ips: vec![ip.parse().unwrap()], ..ServiceInfo::default() }
    }

    fn udp(client: &str, frontend: &str, endpoint: &str) -> Entry {
        entry(IpProtocol::UDP, client, frontend, endpoint)
    }

    fn entry(protocol: IpProtocol, client: &str, frontend: &str, endpoint: &str) -> Entry {
        let (client, frontend, endpoint) = (addr(client), addr(frontend), addr(endpoint));
        Entry {
            protocol,
            original: Tuple { source: client, destination: frontend },
            reply: Tuple { source: endpoint, destination: client },
        }
    }

    fn node() -> NodeContext {
        NodeContext { node_port_ips: vec!["192.168.100.2".parse().unwrap()], ..NodeContext::new("node1") }
    }

    #[test]
    fn stale_entries_should_be_those_to_a_frontend_whose_endpoint_no_longer_serves() {
        let dns = port(
            "dns",
            Protocol::Udp,
            cluster("10.96.0.10"),
            53,
            None,
            vec![endpoint(addr("10.244.0.11:5353"), true), endpoint(addr("10.244.0.12:5353"), false)],
        );
        let live = udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353");
        let not_serving = udp("10.244.0.20:40001", "10.96.0.10:53", "10.244.0.12:5353");
        let removed = udp("10.244.0.20:40002", "10.96.0.10:53", "10.244.0.13:5353");
        let not_natted = udp("10.244.0.20:40003", "10.96.0.10:53", "10.96.0.10:53");
        let old_target_port = udp("10.244.0.20:40004", "10.96.0.10:53", "10.244.0.11:5300");
        let entries = [live, not_serving, removed, not_natted, old_target_port];
        assert_eq!(
            stale_udp_entries(&[dns], &node(), &entries),
            [not_serving, removed, not_natted, old_target_port]
        );
    }

    #[test]
    fn zero_endpoint_service_should_have_every_entry_to_its_frontends_stale() {
        let info = ServiceInfo {
            external_ips: vec!["203.0.113.7".parse().unwrap()],
            load_balancer_ips: vec!["198.51.100.9".parse().unwrap()],
            ..cluster("10.96.0.10")
        };
        let dns = port("dns", Protocol::Udp, info, 53, Some(30053), Vec::new());
        let entries = [
            udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353"),
            udp("10.244.0.20:40000", "203.0.113.7:53", "10.244.0.11:5353"),
            udp("10.244.0.20:40000", "198.51.100.9:53", "10.244.0.11:5353"),
            udp("10.244.0.20:40000", "192.168.100.2:30053", "10.244.0.11:5353"),
        ];
        assert_eq!(stale_udp_entries(&[dns], &node(), &entries), entries);
    }

    #[test]
    fn cleanup_should_never_touch_tcp_or_other_destinations() {
        let dns = port("dns", Protocol::Udp, cluster("10.96.0.10"), 53, Some(30053), Vec::new());
        let entries = [
            // TCP to the very same frontend.
            entry(IpProtocol::TCP, "10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353"),
            entry(IpProtocol::SCTP, "10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353"),
            // Another port of the cluster IP, a pod directly, the node port on an address that
            // does not serve node ports.
            udp("10.244.0.20:40000", "10.96.0.10:54", "10.244.0.11:5353"),
            udp("10.244.0.20:40000", "10.244.0.11:5353", "10.244.0.11:5353"),
            udp("10.244.0.20:40000", "10.244.0.1:30053", "10.244.0.11:5353"),
        ];
        assert!(stale_udp_entries(&[dns], &node(), &entries).is_empty());
    }

    #[test]
    fn tcp_service_port_should_make_no_udp_frontend() {
        let web = port("web", Protocol::Tcp, cluster("10.96.0.10"), 53, None, Vec::new());
        let entries = [udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353")];
        assert!(stale_udp_entries(&[web], &node(), &entries).is_empty());
        assert!(UdpFrontends::new(&[], &node()).is_empty());
    }

    #[test]
    fn terminating_but_serving_endpoint_should_keep_its_flows() {
        let mut draining = endpoint(addr("10.244.0.11:5353"), true);
        draining.conditions = Conditions { ready: false, serving: true, terminating: true };
        let dns = port("dns", Protocol::Udp, cluster("10.96.0.10"), 53, None, vec![draining]);
        let entries = [udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353")];
        assert!(stale_udp_entries(&[dns], &node(), &entries).is_empty());
    }

    #[test]
    fn frontends_should_cover_both_families_and_every_address_kind() {
        let info = ServiceInfo {
            cluster_ips: vec!["10.96.0.10".parse().unwrap(), "fd00:96::10".parse().unwrap()],
            external_ips: vec!["203.0.113.7".parse().unwrap()],
            ..ServiceInfo::default()
        };
        let dns = port("dns", Protocol::Udp, info, 53, Some(30053), Vec::new());
        let index = UdpFrontends::new(&[dns], &node());
        assert_eq!(index.len(), 4);
        for frontend in ["10.96.0.10:53", "[fd00:96::10]:53", "203.0.113.7:53", "192.168.100.2:30053"] {
            assert!(index.is_frontend(&addr(frontend)), "{frontend}");
        }
        assert_eq!(index.families(), [IpFamily::V4, IpFamily::V6]);
        let v6 = udp("[fd00::20]:40000", "[fd00:96::10]:53", "[fd00::11]:5353");
        assert!(index.is_stale(&v6));
    }

    #[test]
    fn shared_frontend_should_keep_flows_to_the_endpoints_of_either_claimant() {
        let a = port(
            "a",
            Protocol::Udp,
            cluster("10.96.0.10"),
            53,
            None,
            vec![endpoint(addr("10.244.0.11:5353"), true)],
        );
        let b = port(
            "b",
            Protocol::Udp,
            cluster("10.96.0.10"),
            53,
            None,
            vec![endpoint(addr("10.244.0.12:5353"), true)],
        );
        let to_a = udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353");
        let to_b = udp("10.244.0.20:40001", "10.96.0.10:53", "10.244.0.12:5353");
        let to_neither = udp("10.244.0.20:40002", "10.96.0.10:53", "10.244.0.13:5353");
        assert_eq!(stale_udp_entries(&[a, b], &node(), &[to_a, to_b, to_neither]), [to_neither]);
    }

    #[test]
    fn ip_protocol_should_name_service_protocols() {
        assert_eq!(IpProtocol::UDP.service_protocol(), Some(Protocol::Udp));
        assert_eq!(IpProtocol::ICMP.service_protocol(), None);
        assert_eq!(IpProtocol::from(Protocol::Sctp), IpProtocol::SCTP);
        assert_eq!(IpProtocol(47).to_string(), "protocol 47");
        assert_eq!(
            udp("10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3").to_string(),
            "udp 10.0.0.1:1 -> 10.0.0.2:2 (reply 10.0.0.3:3 -> 10.0.0.1:1)"
        );
    }

    // === properties, over a small universe of addresses so that entries hit frontends ===

    const SERVICE_IPS: [&str; 3] = ["10.96.0.1", "10.96.0.2", "fd00:96::1"];
    const POD_IPS: [&str; 3] = ["10.244.0.11", "10.244.0.12", "fd00::11"];
    const NODE_IP: &str = "192.168.100.2";
    const PORTS: [u16; 2] = [53, 30053];
    const TARGET_PORTS: [u16; 2] = [5353, 5354];

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop::sample::select(
            SERVICE_IPS
                .iter()
                .chain(&POD_IPS)
                .chain(&[NODE_IP])
                .map(|s| s.parse().unwrap())
                .collect::<Vec<_>>(),
        )
    }

    fn any_socket(ports: Vec<u16>) -> impl Strategy<Value = SocketAddr> {
        (any_ip(), prop::sample::select(ports)).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    fn any_port() -> impl Strategy<Value = ServicePortEndpoints> {
        let endpoints = prop::collection::vec(
            (
                prop::sample::select(POD_IPS.to_vec()),
                prop::sample::select(TARGET_PORTS.to_vec()),
                any::<bool>(),
            ),
            0..4,
        );
        (
            prop::sample::select(vec![Protocol::Udp, Protocol::Udp, Protocol::Tcp]),
            prop::sample::subsequence(SERVICE_IPS.to_vec(), 0..=2),
            prop::sample::select(PORTS.to_vec()),
            prop::option::of(Just(30053_u16)),
            endpoints,
        )
            .prop_map(|(protocol, ips, number, node_port, endpoints)| {
                let mut ips = ips.into_iter().map(|s| s.parse().unwrap());
                let info = ServiceInfo {
                    cluster_ips: ips.next().into_iter().collect(),
                    external_ips: ips.collect(),
                    ..ServiceInfo::default()
                };
                let endpoints = endpoints
                    .into_iter()
                    .map(|(ip, target, serving)| {
                        endpoint(SocketAddr::new(ip.parse().unwrap(), target), serving)
                    })
                    .collect();
                port("svc", protocol, info, number, node_port, endpoints)
            })
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        let all_ports: Vec<u16> = PORTS.iter().chain(&TARGET_PORTS).copied().collect();
        (
            prop::sample::select(vec![IpProtocol::UDP, IpProtocol::UDP, IpProtocol::TCP, IpProtocol::ICMP]),
            any_socket(vec![40000, 40001]),
            any_socket(all_ports.clone()),
            any_socket(all_ports),
        )
            .prop_map(|(protocol, client, frontend, endpoint)| Entry {
                protocol,
                original: Tuple { source: client, destination: frontend },
                reply: Tuple { source: endpoint, destination: client },
            })
    }

    /// The rule as the module documentation states it, by brute force.
    fn naive_is_stale(ports: &[ServicePortEndpoints], node: &NodeContext, entry: &Entry) -> bool {
        let claimants: Vec<&ServicePortEndpoints> = ports
            .iter()
            .filter(|p| p.port.name.protocol == Protocol::Udp)
            .filter(|p| {
                let info = &p.port.service;
                let destination = entry.original.destination;
                let by_address = destination.port() == p.port.port
                    && info
                        .cluster_ips
                        .iter()
                        .chain(&info.external_ips)
                        .chain(&info.load_balancer_ips)
                        .any(|ip| *ip == destination.ip());
                let by_node_port = p.port.node_port == Some(destination.port())
                    && node.node_port_ips.contains(&destination.ip());
                by_address || by_node_port
            })
            .collect();
        entry.protocol == IpProtocol::UDP
            && !claimants.is_empty()
            && !claimants.iter().any(|p| {
                p.endpoints
                    .iter()
                    .any(|e| e.conditions.serving && SocketAddr::new(e.address, e.port) == entry.reply.source)
            })
    }

    proptest! {
        #[test]
        fn stale_entries_should_be_exactly_what_the_rule_says(
            ports in prop::collection::vec(any_port(), 0..4),
            entries in prop::collection::vec(any_entry(), 0..40),
            node_ports in any::<bool>(),
        ) {
            let node = if node_ports { node() } else { NodeContext::new("node1") };
            let stale = stale_udp_entries(&ports, &node, &entries);
            let expected: Vec<Entry> =
                entries.iter().filter(|e| naive_is_stale(&ports, &node, e)).copied().collect();
            prop_assert_eq!(&stale, &expected);
            let index = UdpFrontends::new(&ports, &node);
            for entry in &stale {
                prop_assert_eq!(entry.protocol, IpProtocol::UDP);
                prop_assert!(index.is_frontend(&entry.original.destination));
            }
        }

        #[test]
        fn an_entry_to_a_serving_endpoint_should_never_be_stale(
            ports in prop::collection::vec(any_port(), 1..4),
            client in any_socket(vec![40000]),
        ) {
            let node = node();
            for p in ports.iter().filter(|p| p.port.name.protocol == Protocol::Udp) {
                for e in p.endpoints.iter().filter(|e| e.conditions.serving) {
                    for ip in &p.port.service.cluster_ips {
                        let live = Entry {
                            protocol: IpProtocol::UDP,
                            original: Tuple { source: client, destination: SocketAddr::new(*ip, p.port.port) },
                            reply: Tuple { source: SocketAddr::new(e.address, e.port), destination: client },
                        };
                        prop_assert!(stale_udp_entries(&ports, &node, &[live]).is_empty(), "{}", live);
                    }
                }
            }
        }

        #[test]
        fn removing_every_endpoint_should_make_every_udp_entry_to_the_frontends_stale(
            ports in prop::collection::vec(any_port(), 1..4),
            entries in prop::collection::vec(any_entry(), 0..40),
        ) {
            let node = node();
            let emptied: Vec<ServicePortEndpoints> =
                ports.iter().cloned().map(|mut p| { p.endpoints.clear(); p }).collect();
            let index = UdpFrontends::new(&emptied, &node);
            for entry in &entries {
                let expected = entry.protocol == IpProtocol::UDP && index.is_frontend(&entry.original.destination);
                prop_assert_eq!(index.is_stale(entry), expected, "{}", entry);
            }
        }
    }
}
