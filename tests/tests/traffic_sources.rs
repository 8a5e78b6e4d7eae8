//! Where traffic comes from: a pod reaching itself through its Service (hairpin), and the node
//! itself (the output hook).

use std::time::Duration;

use kproxy_e2e::{Endpoint, EndpointSlice, Lab, POD_GATEWAY, Protocol, Service, ServicePort, root_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn pod_reaching_its_own_service_should_be_answered_by_itself_with_the_node_as_peer() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    pod1.serve_tcp(8080);
    pod1.serve_udp(5301);
    let service = Service::cluster_ip("default", "self", "10.96.0.50")
        .port(ServicePort::tcp("http", 80, 8080))
        .port(ServicePort::udp("dns", 53, 5301));
    let slice = EndpointSlice::for_service(&service).endpoint(Endpoint::ready(pod1.ip()));
    lab.manifests().write("self.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (protocol, name, port) in [(Protocol::Tcp, "http", 8080), (Protocol::Udp, "dns", 5301)] {
        let address = service.address(name);
        lab.wait_for_answers(pod1.netns(), protocol, address, [&pod1]);
        let tally = lab.tally(pod1.netns(), protocol, address, 20, TIMEOUT);
        eprintln!("hairpin {protocol:?}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        let expected = [(pod1.name().to_owned(), POD_GATEWAY.into(), port)];
        assert!(
            tally.replies.keys().eq(expected.iter()),
            "hairpin traffic should be masqueraded to {POD_GATEWAY}: {tally}"
        );
    }
}

#[test]
fn node_namespace_should_reach_the_service_through_the_output_hook() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let endpoints = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
        pod.serve_udp(5301);
    }
    let service = Service::cluster_ip("default", "web", "10.96.0.60")
        .port(ServicePort::tcp("http", 80, 8080))
        .port(ServicePort::udp("dns", 53, 5301));
    let slice =
        EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(|pod| Endpoint::ready(pod.ip())));
    lab.manifests().write("web.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for (protocol, name) in [(Protocol::Tcp, "http"), (Protocol::Udp, "dns")] {
        let address = service.address(name);
        lab.wait_for_answers(lab.node_netns(), protocol, address, &endpoints);
        let tally = lab.tally(lab.node_netns(), protocol, address, 60, TIMEOUT);
        eprintln!("from the node, {protocol:?}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert_eq!(tally.pods().len(), 3, "{tally}");
    }
}
