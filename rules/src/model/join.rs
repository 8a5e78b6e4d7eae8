//! Joining Services with their EndpointSlices.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use super::{Endpoint, EndpointSlice, Protocol, Service, ServiceName, ServicePortEndpoints, ServicePortName};

/// Two or more Service ports claiming the same frontend (address, protocol, port).
///
/// Neither wins: every port involved is left out of the plan and the conflict is reported for
/// each of them, so the outcome never depends on the order objects arrived in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendConflict {
    /// The contested frontend address; `None` for a node port.
    pub address: Option<IpAddr>,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its port.
    pub port: u16,
    /// Every Service port that claims it, sorted.
    pub claimants: Vec<ServicePortName>,
}

impl fmt::Display for FrontendConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.claimants.iter().map(ToString::to_string).collect();
        let address = self.address.map_or_else(|| "node port".to_string(), |a| a.to_string());
        write!(
            f,
            "frontend {address} {}/{} is claimed by {}; none of them is programmed",
            self.port,
            self.protocol,
            names.join(", ")
        )
    }
}

/// The result of [`join`]: every programmable Service port with its endpoints, and the
/// frontend conflicts that kept some ports out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JoinedServices {
    /// Service ports with their endpoints, sorted by port name.
    pub ports: Vec<ServicePortEndpoints>,
    /// Frontends claimed more than once.
    pub conflicts: Vec<FrontendConflict>,
}

/// Gives every Service port the endpoints of its Service's EndpointSlices.
///
/// A slice contributes to a Service port through its port entry of the same name and protocol,
/// which also supplies the endpoints' target port. Slices are merged in name order and an
/// endpoint (address, port) listed twice is kept once, the later slice's copy winning, as in
/// kube-proxy's EndpointSlice cache. Slices of unknown Services or ports contribute nothing.
pub fn join<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> JoinedServices {
    let mut slices_by_service: BTreeMap<&ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        slices_by_service.entry(&slice.service).or_default().push(slice);
    }
    for list in slices_by_service.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }

    let mut ports = Vec::new();
    for service in services {
        let service_slices = slices_by_service.get(&service.name).map(Vec::as_slice).unwrap_or(&[]);
        for port in &service.ports {
            let mut endpoints: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
            for slice in service_slices {
                let Some(slice_port) =
                    slice.ports.iter().find(|p| p.name == port.name.port && p.protocol == port.name.protocol)
                else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    endpoints
                        .insert((endpoint.address, slice_port.port), endpoint.with_port(slice_port.port));
                }
            }
            ports.push(ServicePortEndpoints {
                port: port.clone(),
                endpoints: endpoints.into_values().collect(),
            });
        }
    }
    ports.sort_by(|a, b| a.port.name.cmp(&b.port.name));

    let conflicts = frontend_conflicts(&ports);
    ports.retain(|p| !conflicts.iter().any(|c| c.claimants.contains(&p.port.name)));
    JoinedServices { ports, conflicts }
}

/// Finds every frontend that more than one Service port claims.
fn frontend_conflicts(ports: &[ServicePortEndpoints]) -> Vec<FrontendConflict> {
    let mut claims: BTreeMap<(Option<IpAddr>, Protocol, u16), Vec<ServicePortName>> = BTreeMap::new();
    for p in ports {
        let service = &p.port.service;
        let addresses =
            service.cluster_ips.iter().chain(&service.external_ips).chain(&service.load_balancer_ips);
        for address in addresses {
            claims
                .entry((Some(*address), p.port.name.protocol, p.port.port))
                .or_default()
                .push(p.port.name.clone());
        }
        if let Some(node_port) = p.port.node_port {
            claims.entry((None, p.port.name.protocol, node_port)).or_default().push(p.port.name.clone());
        }
    }
    claims
        .into_iter()
        .filter(|(_, claimants)| claimants.len() > 1)
        .map(|((address, protocol, port), mut claimants)| {
            claimants.sort();
            FrontendConflict { address, protocol, port, claimants }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conditions, EndpointSlicePort, IpFamily, ServiceInfo, ServicePort, SliceEndpoint};

    fn name(ns: &str, n: &str) -> ServiceName {
        ServiceName { namespace: ns.into(), name: n.into() }
    }

    fn service(n: &str, ip: &str, ports: &[(&str, u16, Protocol)]) -> Service {
        let info = std::sync::Arc::new(ServiceInfo {
            cluster_ips: vec![ip.parse().unwrap()],
            ..ServiceInfo::default()
        });
        Service {
            name: name("default", n),
            ports: ports
                .iter()
                .map(|(port_name, port, protocol)| ServicePort {
                    name: ServicePortName {
                        service: name("default", n),
                        port: (*port_name).into(),
                        protocol: *protocol,
                    },
                    port: *port,
                    node_port: None,
                    service: info.clone(),
                })
                .collect(),
            warnings: Vec::new(),
        }
    }

    fn slice(
        slice_name: &str,
        svc: &str,
        ports: &[(&str, u16, Protocol)],
        eps: &[(&str, bool)],
    ) -> EndpointSlice {
        EndpointSlice {
            name: slice_name.into(),
            service: name("default", svc),
            family: IpFamily::V4,
            ports: ports
                .iter()
                .map(|(n, port, protocol)| EndpointSlicePort {
                    name: (*n).into(),
                    port: *port,
                    protocol: *protocol,
                })
                .collect(),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| SliceEndpoint {
                    address: ip.parse().unwrap(),
                    conditions: Conditions { ready: *ready, ..Conditions::READY },
                    node_name: None,
                    zone: None,
                    hints: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn join_should_resolve_target_ports_by_port_name_and_protocol() {
        let services =
            [service("web", "10.96.0.1", &[("http", 80, Protocol::Tcp), ("dns", 53, Protocol::Udp)])];
        let slices = [slice(
            "web-1",
            "web",
            &[("http", 8080, Protocol::Tcp), ("dns", 5353, Protocol::Udp), ("http", 9999, Protocol::Udp)],
            &[("10.0.0.1", true)],
        )];
        let joined = join(&services, &slices);
        let ports: Vec<(String, Vec<u16>)> = joined
            .ports
            .iter()
            .map(|p| (p.port.name.port.clone(), p.endpoints.iter().map(|e| e.port).collect()))
            .collect();
        assert_eq!(ports, vec![("dns".into(), vec![5353]), ("http".into(), vec![8080])]);
    }

    #[test]
    fn join_should_merge_slices_and_keep_a_duplicate_endpoint_once_from_the_later_slice() {
        let services = [service("web", "10.96.0.1", &[("", 80, Protocol::Tcp)])];
        let p = [("", 8080, Protocol::Tcp)];
        let slices = [
            slice("web-b", "web", &p, &[("10.0.0.2", true), ("10.0.0.1", true)]),
            slice("web-a", "web", &p, &[("10.0.0.1", false), ("10.0.0.3", true)]),
        ];
        let joined = join(&services, &slices);
        let eps: Vec<(String, bool)> =
            joined.ports[0].endpoints.iter().map(|e| (e.address.to_string(), e.conditions.ready)).collect();
        assert_eq!(
            eps,
            vec![("10.0.0.1".into(), true), ("10.0.0.2".into(), true), ("10.0.0.3".into(), true)]
        );
    }

    #[test]
    fn join_should_ignore_slices_of_other_services_and_unknown_ports() {
        let services = [service("web", "10.96.0.1", &[("http", 80, Protocol::Tcp)])];
        let slices = [
            slice("other-1", "other", &[("http", 8080, Protocol::Tcp)], &[("10.0.0.1", true)]),
            slice("web-1", "web", &[("metrics", 9090, Protocol::Tcp)], &[("10.0.0.2", true)]),
        ];
        let joined = join(&services, &slices);
        assert!(joined.ports[0].endpoints.is_empty());
    }

    #[test]
    fn join_should_leave_out_every_port_of_a_conflicting_frontend() {
        let services = [
            service("a", "10.96.0.1", &[("", 80, Protocol::Tcp)]),
            service("b", "10.96.0.1", &[("", 80, Protocol::Tcp), ("udp", 80, Protocol::Udp)]),
        ];
        let joined = join(&services, &[]);
        assert_eq!(joined.conflicts.len(), 1);
        assert_eq!(joined.conflicts[0].claimants.len(), 2);
        let left: Vec<String> = joined.ports.iter().map(|p| p.port.name.to_string()).collect();
        assert_eq!(left, vec!["default/b:udp/udp".to_string()]);
    }
}
