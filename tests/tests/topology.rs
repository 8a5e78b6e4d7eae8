//! Topology hints, as kube-proxy honours them: when every endpoint carries zone hints and one
//! names this node's zone (`zone-a`, from the Node's label), only those get traffic; one endpoint
//! without hints means the hints are ignored; `forNodes` hints naming this node win the same way.

use std::time::Duration;

use kproxy_e2e::{Endpoint, EndpointSlice, Lab, Node, Pod, Protocol, Service, ServicePort, root_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A local pod `pod1` and remote pods `rpod1`, `rpod2` serving TCP 8080, plus a `client` pod.
fn lab_with_pods() -> (Lab, Pod, [Pod; 3]) {
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let pods = [lab.add_pod("pod1"), lab.add_remote_pod("rpod1"), lab.add_remote_pod("rpod2")];
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    (lab, client, pods)
}

/// Writes the Node (zone `zone-a`) and Service `web` with `endpoints`, starts the agent, and
/// checks that `client`'s traffic reaches exactly `expected`.
fn assert_traffic_reaches(lab: &Lab, client: &Pod, endpoints: Vec<Endpoint>, expected: &[&Pod]) {
    let service =
        Service::cluster_ip("default", "web", "10.96.6.10").port(ServicePort::tcp("http", 80, 8080));
    let slice = EndpointSlice::for_service(&service).endpoints(endpoints);
    lab.manifests().write("node.yaml", &[&Node::lab_node()]);
    lab.manifests().write("web.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let address = service.address("http");
    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, expected.iter().copied());
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 60, TIMEOUT);
    eprintln!("{address}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.pods().len(), expected.len(), "{tally}");
}

#[test]
fn zone_hints_should_send_traffic_only_to_endpoints_hinted_for_this_zone() {
    if !root_or_skip() {
        return;
    }
    let (lab, client, [pod1, rpod1, rpod2]) = lab_with_pods();
    let endpoints = vec![
        Endpoint::of(&pod1).in_zone("zone-a").hint_zones(&["zone-a"]),
        Endpoint::of(&rpod1).in_zone("zone-b").hint_zones(&["zone-b"]),
        Endpoint::of(&rpod2).in_zone("zone-b").hint_zones(&["zone-b"]),
    ];
    assert_traffic_reaches(&lab, &client, endpoints, &[&pod1]);
}

#[test]
fn zone_hints_should_be_ignored_when_one_endpoint_has_none() {
    if !root_or_skip() {
        return;
    }
    let (lab, client, [pod1, rpod1, rpod2]) = lab_with_pods();
    let endpoints = vec![
        Endpoint::of(&pod1).in_zone("zone-a").hint_zones(&["zone-a"]),
        Endpoint::of(&rpod1).in_zone("zone-b").hint_zones(&["zone-b"]),
        Endpoint::of(&rpod2).in_zone("zone-b"),
    ];
    assert_traffic_reaches(&lab, &client, endpoints, &[&pod1, &rpod1, &rpod2]);
}

#[test]
fn node_hints_should_send_traffic_only_to_endpoints_hinted_for_this_node() {
    if !root_or_skip() {
        return;
    }
    let (lab, client, [pod1, rpod1, rpod2]) = lab_with_pods();
    let endpoints = vec![
        Endpoint::of(&pod1).in_zone("zone-a").hint_nodes(&["node1"]),
        Endpoint::of(&rpod1).in_zone("zone-a").hint_nodes(&["node2"]),
        Endpoint::of(&rpod2).in_zone("zone-a").hint_nodes(&["node2"]),
    ];
    assert_traffic_reaches(&lab, &client, endpoints, &[&pod1]);
}
