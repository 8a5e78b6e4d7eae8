//! A ClusterIP spreads new connections over its ready endpoints at random.

use std::time::Duration;

use kproxy_e2e::{Endpoint, EndpointSlice, Lab, Protocol, Service, ServicePort, root_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn cluster_ip_should_spread_new_tcp_connections_over_all_ready_endpoints() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &endpoints {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.10").port(ServicePort::tcp("http", 80, 8080));
    let slice =
        EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(|pod| Endpoint::ready(pod.ip())));
    lab.manifests().write("web.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), &endpoints);

    let tally = lab.tally(client.netns(), Protocol::Tcp, service.address("http"), 300, TIMEOUT);
    eprintln!("{tally}");
    for pod in &endpoints {
        eprintln!("share of {}: {:.1}%", pod.name(), 100.0 * tally.share(pod.name()));
    }
    assert_eq!(tally.failures(), 0, "every connection should succeed: {tally}");
    assert_eq!(tally.ports(), [8080].into(), "{tally}");
    for pod in &endpoints {
        let share = tally.share(pod.name());
        assert!((0.20..=0.47).contains(&share), "{} got {:.1}%: {tally}", pod.name(), 100.0 * share);
    }
}
