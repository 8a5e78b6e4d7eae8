//! This node as the planner sees it: its name and settings, and what its Node object says
//! (addresses for node ports, zone for topology hints).

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kproxy_rules::NodeContext;
use kproxy_rules::model::IpFamily;

use crate::config::{Config, NodePortAddress};

/// The label that gives a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the agent knows about its node before it sees the Node object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// The node's name.
    pub name: String,
    /// `nodePortAddresses`.
    pub node_port_addresses: Vec<NodePortAddress>,
    /// `clusterCIDR`.
    pub cluster_cidrs: Vec<IpNet>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// `scheduler`.
    pub scheduler: kproxy_rules::sched::Scheduler,
}

impl NodeSettings {
    /// The settings of `config` for the node called `name`.
    pub fn new(name: String, config: &Config) -> NodeSettings {
        NodeSettings {
            name,
            node_port_addresses: config.node_port_addresses.clone(),
            cluster_cidrs: config.cluster_cidrs.clone(),
            masquerade_all: config.masquerade_all,
            scheduler: config.scheduler,
        }
    }

    /// A node known by name only, with kube-proxy's defaults.
    #[cfg(test)]
    pub fn named(name: &str) -> NodeSettings {
        NodeSettings::new(name.into(), &Config::default())
    }

    /// This node's Node object among `nodes`.
    pub fn find<'a>(&self, nodes: &'a [std::sync::Arc<Node>]) -> Option<&'a Node> {
        nodes.iter().map(AsRef::as_ref).find(|n| n.metadata.name.as_deref() == Some(self.name.as_str()))
    }

    /// The planner's view, given the Node object (when there is one).
    ///
    /// Node ports are served on the Node's primary address of each family (its first
    /// InternalIP, else its first ExternalIP: kube-proxy's `GetNodeHostIPs`) for `primary`, and
    /// on every Node address inside a configured CIDR. Without a Node object no node port is
    /// served. Loopback addresses are never used, as in kube-proxy's nftables mode.
    pub fn context(&self, node: Option<&Node>) -> NodeContext {
        let addresses: Vec<(String, IpAddr)> = node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a.type_.clone(), a.address.parse().ok()?)))
            .collect();
        let mut node_port_ips = Vec::new();
        for wanted in &self.node_port_addresses {
            match wanted {
                NodePortAddress::Primary => {
                    for family in IpFamily::ALL {
                        let of = |kind: &str| {
                            addresses
                                .iter()
                                .find(|(t, ip)| t == kind && IpFamily::of(ip) == family)
                                .map(|(_, ip)| *ip)
                        };
                        node_port_ips.extend(of("InternalIP").or_else(|| of("ExternalIP")));
                    }
                }
                NodePortAddress::Cidr(cidr) => {
                    node_port_ips.extend(addresses.iter().map(|(_, ip)| *ip).filter(|ip| cidr.contains(ip)));
                }
            }
        }
        node_port_ips.retain(|ip| !ip.is_loopback());
        node_port_ips.sort();
        node_port_ips.dedup();
        NodeContext {
            node_name: self.name.clone(),
            zone: node.and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get(ZONE_LABEL)).cloned(),
            node_port_ips,
            cluster_cidrs: self.cluster_cidrs.clone(),
            masquerade_all: self.masquerade_all,
            default_scheduler: self.scheduler,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node1".into()),
                labels: Some([(ZONE_LABEL.to_string(), "zone-a".to_string())].into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress { type_: t.to_string(), address: a.to_string() })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn node_ports_should_be_served_on_the_primary_address_of_each_family_by_default() {
        let n = node(&[
            ("Hostname", "node1"),
            ("ExternalIP", "198.51.100.7"),
            ("InternalIP", "192.168.1.2"),
            ("InternalIP", "192.168.1.3"),
            ("InternalIP", "fd00::2"),
        ]);
        let context = NodeSettings::named("node1").context(Some(&n));
        let ips: Vec<String> = context.node_port_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["192.168.1.2", "fd00::2"]);
        assert_eq!(context.zone.as_deref(), Some("zone-a"));
    }

    #[test]
    fn node_ports_should_be_served_on_node_addresses_inside_configured_cidrs() {
        let n = node(&[
            ("InternalIP", "192.168.1.2"),
            ("ExternalIP", "198.51.100.7"),
            ("InternalIP", "127.0.0.1"),
        ]);
        let mut settings = NodeSettings::named("node1");
        settings.node_port_addresses = vec![
            NodePortAddress::Cidr("198.51.100.0/24".parse().unwrap()),
            NodePortAddress::Cidr("127.0.0.0/8".parse().unwrap()),
        ];
        let ips: Vec<String> =
            settings.context(Some(&n)).node_port_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["198.51.100.7"], "loopback is never served");
        assert!(NodeSettings::named("node1").context(None).node_port_ips.is_empty());
    }
}
