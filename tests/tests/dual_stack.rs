//! IPv6 and dual-stack Services: an IPv6 ClusterIP with IPv6 endpoints, a dual-stack Service on
//! both families, an IPv6 NodePort from outside, and hairpin over IPv6.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kproxy_e2e::{
    Endpoint, EndpointSlice, IpFamily, Lab, NODE_UPLINK_IP, NODE_UPLINK_IP6, Node, POD_GATEWAY6, Protocol,
    Service, ServicePort, root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn ipv6_cluster_ip_should_be_answered_over_ipv6_by_ipv6_endpoints() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
        pod.serve_udp(5301);
    }
    let service = Service::cluster_ip("default", "web6", "fd00:10:96::10")
        .port(ServicePort::tcp("http", 80, 8080))
        .port(ServicePort::udp("dns", 53, 5301));
    let slice = EndpointSlice::for_service_v6(&service).endpoints(endpoints.iter().map(Endpoint::of_v6));
    lab.manifests().write("web6.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (protocol, port, target) in [(Protocol::Tcp, "http", 8080), (Protocol::Udp, "dns", 5301)] {
        let address = service.address(port);
        lab.wait_for_answers(client.netns(), protocol, address, &endpoints);
        let tally = lab.tally(client.netns(), protocol, address, 40, TIMEOUT);
        eprintln!("{protocol:?} {address}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert_eq!(tally.ports(), [target].into(), "{tally}");
        assert_eq!(tally.peers(), BTreeSet::from([IpAddr::from(client.ip6())]), "{tally}");
    }
}

#[test]
fn dual_stack_service_should_be_answered_on_both_families() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let (pod1, rpod1) = (lab.add_pod("pod1"), lab.add_remote_pod("rpod1"));
    for pod in [&pod1, &rpod1] {
        pod.serve_tcp(8080);
    }
    let service = Service::cluster_ip("default", "web", "10.96.5.20")
        .second_cluster_ip("fd00:10:96::20")
        .port(ServicePort::tcp("http", 80, 8080));
    let v4 = EndpointSlice::for_service(&service).endpoints([Endpoint::of(&pod1), Endpoint::of(&rpod1)]);
    let v6 =
        EndpointSlice::for_service_v6(&service).endpoints([Endpoint::of_v6(&pod1), Endpoint::of_v6(&rpod1)]);
    lab.manifests().write("web.yaml", &[&service, &v4, &v6]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (family, source) in [(IpFamily::V4, IpAddr::from(client.ip())), (IpFamily::V6, client.ip6().into())] {
        let address = service.address_of_family(family, "http");
        lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &rpod1]);
        let tally = lab.tally(client.netns(), Protocol::Tcp, address, 40, TIMEOUT);
        eprintln!("{address}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert_eq!(tally.peers(), BTreeSet::from([source]), "{tally}");
    }
}

#[test]
fn ipv6_node_port_should_be_answered_from_outside_over_ipv6() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let (pod1, rpod1) = (lab.add_pod("pod1"), lab.add_remote_pod("rpod1"));
    for pod in [&pod1, &rpod1] {
        pod.serve_tcp(8080);
    }
    let service = Service::node_port("default", "web", "10.96.5.30")
        .second_cluster_ip("fd00:10:96::30")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30120));
    let v4 = EndpointSlice::for_service(&service).endpoints([Endpoint::of(&pod1), Endpoint::of(&rpod1)]);
    let v6 =
        EndpointSlice::for_service_v6(&service).endpoints([Endpoint::of_v6(&pod1), Endpoint::of_v6(&rpod1)]);
    lab.manifests().write("node.yaml", &[&Node::lab_node()]);
    lab.manifests().write("web.yaml", &[&service, &v4, &v6]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let node_addresses = lab.node_addresses();
    for node_ip in [IpAddr::from(NODE_UPLINK_IP6), NODE_UPLINK_IP.into()] {
        let node_port = service.node_port_on(node_ip, "http");
        lab.wait_for_answers(ext.netns(), Protocol::Tcp, node_port, [&pod1, &rpod1]);
        let tally = lab.tally(ext.netns(), Protocol::Tcp, node_port, 40, TIMEOUT);
        eprintln!("ext → {node_port}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert!(
            tally
                .peers()
                .iter()
                .all(|peer| node_addresses.contains(peer) && peer.is_ipv4() == node_ip.is_ipv4()),
            "masqueraded to a node address of the same family: {tally}"
        );
    }
}

#[test]
fn pod_reaching_its_own_ipv6_service_should_be_answered_by_itself_with_the_node_as_peer() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    pod1.serve_tcp(8080);
    pod1.serve_udp(5301);
    let service = Service::cluster_ip("default", "self6", "fd00:10:96::40")
        .port(ServicePort::tcp("http", 80, 8080))
        .port(ServicePort::udp("dns", 53, 5301));
    let slice = EndpointSlice::for_service_v6(&service).endpoint(Endpoint::of_v6(&pod1));
    lab.manifests().write("self6.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (protocol, name, port) in [(Protocol::Tcp, "http", 8080), (Protocol::Udp, "dns", 5301)] {
        let address = service.address(name);
        lab.wait_for_answers(pod1.netns(), protocol, address, [&pod1]);
        let tally = lab.tally(pod1.netns(), protocol, address, 20, TIMEOUT);
        eprintln!("hairpin {protocol:?} {address}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        let expected = [(pod1.name().to_owned(), IpAddr::from(POD_GATEWAY6), port)];
        assert!(
            tally.replies.keys().eq(expected.iter()),
            "hairpin traffic should be masqueraded to {POD_GATEWAY6}: {tally}"
        );
    }
}
