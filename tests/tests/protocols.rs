//! UDP services, multi-port services, and one port number on both TCP and UDP.

use std::time::Duration;

use kproxy_e2e::{Endpoint, EndpointSlice, Lab, Protocol, Service, ServicePort, root_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn udp_service_should_be_answered_by_every_endpoint() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &endpoints {
        pod.serve_udp(5301);
    }
    let service = Service::cluster_ip("default", "dns", "10.96.0.40").port(ServicePort::udp("dns", 53, 5301));
    let slice =
        EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(|pod| Endpoint::ready(pod.ip())));
    lab.manifests().write("dns.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    lab.wait_for_answers(client.netns(), Protocol::Udp, service.address("dns"), &endpoints);
    let tally = lab.tally(client.netns(), Protocol::Udp, service.address("dns"), 90, TIMEOUT);
    eprintln!("{tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.ports(), [5301].into(), "{tally}");
    for pod in &endpoints {
        assert!(tally.count(pod.name()) > 0, "{} never answered: {tally}", pod.name());
    }
}

#[test]
fn multi_port_service_should_translate_each_port_to_its_own_target_port() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
        pod.serve_tcp(9090);
    }
    let service = Service::cluster_ip("default", "app", "10.96.0.41")
        .port(ServicePort::tcp("http", 80, 8080))
        .port(ServicePort::tcp("metrics", 81, 9090));
    let mut slice =
        EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(|pod| Endpoint::ready(pod.ip())));
    // The agent must match ports by name, not by position.
    slice.ports.reverse();
    lab.manifests().write("app.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (name, target) in [("http", 8080), ("metrics", 9090)] {
        lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address(name), &endpoints);
        let tally = lab.tally(client.netns(), Protocol::Tcp, service.address(name), 40, TIMEOUT);
        eprintln!("port {name}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert_eq!(tally.ports(), [target].into(), "port {name} should reach target port {target}: {tally}");
    }
}

#[test]
fn same_port_on_tcp_and_udp_should_reach_different_target_ports() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2"]);
    // Both protocols listen on both ports, so a mix-up shows as a wrong port in the reply.
    for pod in &endpoints {
        for port in [5300, 5301] {
            pod.serve_tcp(port);
            pod.serve_udp(port);
        }
    }
    let service = Service::cluster_ip("default", "dns", "10.96.0.42")
        .port(ServicePort::tcp("dns-tcp", 53, 5300))
        .port(ServicePort::udp("dns-udp", 53, 5301));
    let slice =
        EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(|pod| Endpoint::ready(pod.ip())));
    lab.manifests().write("dns.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (protocol, name, target) in [(Protocol::Tcp, "dns-tcp", 5300), (Protocol::Udp, "dns-udp", 5301)] {
        let address = service.address(name);
        lab.wait_for_answers(client.netns(), protocol, address, &endpoints);
        let tally = lab.tally(client.netns(), protocol, address, 40, TIMEOUT);
        eprintln!("{protocol:?} {address}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert_eq!(tally.ports(), [target].into(), "{protocol:?} port 53 should reach {target}: {tally}");
    }
}
