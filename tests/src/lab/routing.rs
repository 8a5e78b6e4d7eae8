//! The parts of the lab that make it routed like a real cluster, built on demand: a second node
//! holding remote pods, and an external client behind the gateway, which then routes the pod
//! CIDRs and the external / load-balancer IP range to the node.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    EXTERNAL_CLIENT_IP, EXTERNAL_CLIENT_IP6, EXTERNAL_IP_RANGE, Lab, NODE_LINK_IP, NODE_LINK_IP6,
    NODE_UPLINK_IP, NODE_UPLINK_IP6, NODE2_LINK_IP, NODE2_LINK_IP6, lock, write_sysctl,
};
use crate::command::{self, ip};
use crate::lab::traffic::Source;

/// The gateway's address towards the external client.
pub const EXTERNAL_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
/// The gateway's IPv6 address towards the external client.
pub const EXTERNAL_GATEWAY_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x200, 0, 0, 0, 1);
/// The last host number of the external client's extra addresses (192.168.200.3 up to this).
const LAST_EXTRA_HOST: u8 = 20;

/// The external client: namespace `<lab>-ext` behind the gateway, with `eth0`
/// 192.168.200.2/24 (plus 192.168.200.3–.20 as /32 extras) and fd00:192:168:200::2/64.
///
/// Pass [`ExternalClient::netns`] (or [`ExternalClient::from`] for another source address) to
/// the lab's request methods.
#[derive(Debug, Clone)]
pub struct ExternalClient {
    netns: String,
}

impl ExternalClient {
    /// The namespace; requests from it leave from 192.168.200.2 (IPv4) or
    /// fd00:192:168:200::2 (IPv6).
    #[must_use]
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The primary IPv4 address, 192.168.200.2.
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        EXTERNAL_CLIENT_IP
    }

    /// The IPv6 address, fd00:192:168:200::2.
    #[must_use]
    pub fn ip6(&self) -> Ipv6Addr {
        EXTERNAL_CLIENT_IP6
    }

    /// The extra IPv4 source addresses, 192.168.200.3 to 192.168.200.20.
    #[must_use]
    pub fn extra_ips(&self) -> Vec<Ipv4Addr> {
        (3..=LAST_EXTRA_HOST).map(|host| Ipv4Addr::new(192, 168, 200, host)).collect()
    }

    /// Requests from this client with source address `address` (one of its own).
    ///
    /// # Panics
    /// If `address` is not one of the client's addresses.
    #[must_use]
    pub fn from(&self, address: impl Into<IpAddr>) -> Source<'_> {
        let address = address.into();
        let own = address == IpAddr::from(self.ip())
            || address == IpAddr::from(self.ip6())
            || self.extra_ips().iter().any(|extra| IpAddr::from(*extra) == address);
        assert!(own, "{address} is not an address of the external client");
        Source::new(&self.netns, Some(address))
    }
}

impl Lab {
    /// Adds the external client (once; later calls return the same one). The gateway then
    /// forwards and routes the pod CIDRs and [`EXTERNAL_IP_RANGE`] to the node (see the module
    /// documentation of [`crate::lab`]).
    ///
    /// # Panics
    /// If a step fails.
    pub fn add_external_client(&self) -> ExternalClient {
        let mut external = lock(&self.external);
        if let Some(client) = external.as_ref() {
            return client.clone();
        }
        self.route_cluster_at_gateway();
        let (gateway, netns) = (self.gateway.as_str(), format!("{}-ext", self.id));
        self.add_namespace(&netns);
        let ext = netns.as_str();
        ip(&["-n", gateway, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext]);
        ip(&["-n", gateway, "addr", "add", &format!("{EXTERNAL_GATEWAY_IP}/24"), "dev", "ext0"]);
        ip(&[
            "-n",
            gateway,
            "-6",
            "addr",
            "add",
            &format!("{EXTERNAL_GATEWAY_IP6}/64"),
            "dev",
            "ext0",
            "nodad",
        ]);
        let mut addresses = format!(
            "addr add {EXTERNAL_CLIENT_IP}/24 dev eth0\naddr add {EXTERNAL_CLIENT_IP6}/64 dev eth0 nodad\n"
        );
        for host in 3..=LAST_EXTRA_HOST {
            addresses.push_str(&format!("addr add 192.168.200.{host}/32 dev eth0\n"));
        }
        command::run("ip", &["-n", ext, "-batch", "-"], Some(&addresses)).expect_success();
        ip(&["-n", gateway, "link", "set", "ext0", "up"]);
        ip(&["-n", ext, "link", "set", "eth0", "up"]);
        let (via, via6) = (EXTERNAL_GATEWAY_IP.to_string(), EXTERNAL_GATEWAY_IP6.to_string());
        ip(&["-n", ext, "route", "add", "default", "via", &via, "src", &EXTERNAL_CLIENT_IP.to_string()]);
        ip(&["-n", ext, "-6", "route", "add", "default", "via", &via6]);
        let client = ExternalClient { netns };
        *external = Some(client.clone());
        client
    }

    /// Makes the gateway route `cidr` (IPv4 or IPv6) to the node, as an upstream router of a
    /// cluster would route a pod or Service CIDR; packets for `cidr` coming back from the node
    /// are dropped at the gateway. Turns the gateway's routing on first (see
    /// [`Lab::add_external_client`]).
    ///
    /// # Panics
    /// If a step fails (e.g. the route exists already).
    pub fn route_at_gateway_via_node(&self, cidr: &str) {
        self.route_cluster_at_gateway();
        self.gateway_route_via_node(cidr);
    }

    /// The gateway as the cluster's upstream router, once: forwarding on, a blackhole default
    /// (an unknown destination is dropped, as without forwarding), and the pod CIDRs and
    /// [`EXTERNAL_IP_RANGE`] via the node.
    fn route_cluster_at_gateway(&self) {
        let mut routed = lock(&self.gateway_routes);
        if *routed {
            return;
        }
        let gateway = self.gateway.as_str();
        self.run_in(gateway, || {
            write_sysctl("net/ipv4/ip_forward", "1");
            write_sysctl("net/ipv6/conf/all/forwarding", "1");
        });
        ip(&["-n", gateway, "route", "add", "blackhole", "default"]);
        ip(&["-n", gateway, "-6", "route", "add", "blackhole", "default"]);
        for cidr in ["10.244.0.0/16", "fd00:10:244::/48", EXTERNAL_IP_RANGE] {
            self.gateway_route_via_node(cidr);
        }
        *routed = true;
    }

    fn gateway_route_via_node(&self, cidr: &str) {
        let gateway = self.gateway.as_str();
        let (family, via) = if cidr.contains(':') {
            ("-6", NODE_UPLINK_IP6.to_string())
        } else {
            ("-4", NODE_UPLINK_IP.to_string())
        };
        ip(&["-n", gateway, family, "route", "add", cidr, "via", &via]);
        ip(&["-n", gateway, family, "rule", "add", "iif", "up0", "to", cidr, "blackhole"]);
    }

    /// Node2's namespace, if a remote pod made it exist.
    #[must_use]
    pub fn node2_netns(&self) -> Option<String> {
        lock(&self.node2).clone()
    }

    /// Node2's namespace, created with its link to the node on first use.
    pub(super) fn node2_netns_or_create(&self) -> String {
        let mut node2 = lock(&self.node2);
        if let Some(name) = node2.as_ref() {
            return name.clone();
        }
        let (node, name) = (self.node.as_str(), format!("{}-node2", self.id));
        self.add_namespace(&name);
        let remote = name.as_str();
        ip(&[
            "-n", node, "link", "add", "to-node2", "type", "veth", "peer", "name", "to-node1", "netns",
            remote,
        ]);
        ip(&["-n", node, "addr", "add", &format!("{NODE_LINK_IP}/30"), "dev", "to-node2"]);
        ip(&["-n", node, "-6", "addr", "add", &format!("{NODE_LINK_IP6}/64"), "dev", "to-node2", "nodad"]);
        ip(&["-n", remote, "addr", "add", &format!("{NODE2_LINK_IP}/30"), "dev", "to-node1"]);
        ip(&["-n", remote, "-6", "addr", "add", &format!("{NODE2_LINK_IP6}/64"), "dev", "to-node1", "nodad"]);
        ip(&["-n", node, "link", "set", "to-node2", "up"]);
        ip(&["-n", remote, "link", "set", "to-node1", "up"]);
        let (to_node2, to_node2_6) = (NODE2_LINK_IP.to_string(), NODE2_LINK_IP6.to_string());
        ip(&["-n", node, "route", "add", "10.244.2.0/24", "via", &to_node2]);
        ip(&["-n", node, "-6", "route", "add", "fd00:10:244:2::/64", "via", &to_node2_6]);
        let (to_node, to_node6) = (NODE_LINK_IP.to_string(), NODE_LINK_IP6.to_string());
        for cidr in ["10.244.0.0/16", "192.168.0.0/16"] {
            ip(&["-n", remote, "route", "add", cidr, "via", &to_node]);
        }
        for cidr in ["fd00:10:244::/48", "fd00:192:168::/48"] {
            ip(&["-n", remote, "-6", "route", "add", cidr, "via", &to_node6]);
        }
        self.run_in(remote, || {
            write_sysctl("net/ipv4/ip_forward", "1");
            write_sysctl("net/ipv6/conf/all/forwarding", "1");
        });
        *node2 = Some(name.clone());
        name
    }
}
