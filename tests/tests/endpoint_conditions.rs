//! Which endpoints get traffic: ready ones; serving-and-terminating ones only when none is
//! ready; never a not-ready, non-serving one; and with nobody left, a prompt reject.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kproxy_e2e::{ClientError, Endpoint, EndpointSlice, Lab, Protocol, Service, ServicePort, root_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn not_ready_endpoint_should_get_traffic_only_while_it_is_ready() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let [pod1, pod2, pod3] = <[_; 3]>::try_from(lab.add_pods(&["pod1", "pod2", "pod3"])).unwrap();
    for pod in [&pod1, &pod2, &pod3] {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.20").port(ServicePort::tcp("http", 80, 8080));
    let address = service.address("http");
    let slice = |endpoints: [Endpoint; 3]| EndpointSlice::for_service(&service).endpoints(endpoints);

    lab.manifests().write(
        "web.yaml",
        &[
            &service,
            &slice([Endpoint::ready(pod1.ip()), Endpoint::ready(pod2.ip()), Endpoint::not_ready(pod3.ip())]),
        ],
    );
    let _agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &pod2]);
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 100, TIMEOUT);
    eprintln!("pod3 not ready: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.count("pod3"), 0, "a not-ready endpoint must never answer: {tally}");

    lab.manifests().write(
        "web.yaml",
        &[
            &service,
            &slice([Endpoint::ready(pod1.ip()), Endpoint::ready(pod2.ip()), Endpoint::ready(pod3.ip())]),
        ],
    );
    let took = lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &pod2, &pod3]);
    eprintln!("pod3 became ready: it answered {took:?} after the manifest changed");

    lab.manifests().write(
        "web.yaml",
        &[
            &service,
            &slice([Endpoint::not_ready(pod1.ip()), Endpoint::ready(pod2.ip()), Endpoint::ready(pod3.ip())]),
        ],
    );
    let took = lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod2, &pod3]);
    eprintln!("pod1 became not ready: it stopped answering {took:?} after the manifest changed");
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 100, TIMEOUT);
    eprintln!("pod1 not ready: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.count("pod1"), 0, "a not-ready endpoint must never answer: {tally}");
}

#[test]
fn serving_terminating_endpoints_should_answer_only_while_no_endpoint_is_ready() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let [pod1, pod2, pod3, pod4] =
        <[_; 4]>::try_from(lab.add_pods(&["pod1", "pod2", "pod3", "pod4"])).unwrap();
    for pod in [&pod1, &pod2, &pod3, &pod4] {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.30").port(ServicePort::tcp("http", 80, 8080));
    let address = service.address("http");
    let draining = [
        Endpoint::serving_terminating(pod1.ip()),
        Endpoint::serving_terminating(pod2.ip()),
        Endpoint::terminating_not_serving(pod3.ip()),
    ];
    let slice = EndpointSlice::for_service(&service).endpoints(draining.clone());
    lab.manifests().write("web.yaml", &[&service, &slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &pod2]);
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 100, TIMEOUT);
    eprintln!("only terminating endpoints: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.count("pod3"), 0, "a terminating, non-serving endpoint must never answer: {tally}");
    assert!(tally.count("pod1") > 0 && tally.count("pod2") > 0, "{tally}");

    // A ready endpoint appears: the terminating ones are only a fallback.
    let slice = EndpointSlice::for_service(&service).endpoints(draining).endpoint(Endpoint::ready(pod4.ip()));
    lab.manifests().write("web.yaml", &[&service, &slice]);
    let took = lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod4]);
    eprintln!("a ready endpoint took over from the terminating ones after {took:?}");
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 50, TIMEOUT);
    assert_eq!(tally.count("pod4"), 50, "{tally}");
}

#[test]
fn service_without_usable_endpoints_should_refuse_tcp_at_once_and_udp_with_port_unreachable() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    // pod1 listens everywhere, so only kproxy's choice can make a request fail.
    pod1.serve_tcp(8080);
    pod1.serve_udp(5301);
    let ports = |service: Service| {
        service.port(ServicePort::tcp("http", 80, 8080)).port(ServicePort::udp("dns", 53, 5301))
    };
    let empty = ports(Service::cluster_ip("default", "empty", "10.96.0.31"));
    let starting = ports(Service::cluster_ip("default", "starting", "10.96.0.32"));
    let starting_slice = EndpointSlice::for_service(&starting).endpoint(Endpoint::not_ready(pod1.ip()));
    lab.manifests().write("empty.yaml", &[&empty]);
    lab.manifests().write("starting.yaml", &[&starting, &starting_slice]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for service in [&empty, &starting] {
        // A rejection may be an ICMP error (for TCP too), and the kernel allows a host only a
        // burst of 6 of those, then one a second (net.ipv4.icmp_ratelimit): so every check has
        // a client of its own and sends only a few requests. Past the burst a rejected SYN would
        // be retried after a second — a kernel rule, not a kproxy bug.
        let tcp_client = lab.add_pod(&format!("tcp-{}", service.name));
        let udp_client = lab.add_pod(&format!("udp-{}", service.name));
        let took = lab.wait_for_refused(tcp_client.netns(), Protocol::Tcp, service.address("http"));
        eprintln!("{} TCP refused after {took:?}", service.name);
        assert_refused_promptly(&lab, tcp_client.netns(), Protocol::Tcp, service.address("http"), 3);
        assert_refused_promptly(&lab, udp_client.netns(), Protocol::Udp, service.address("dns"), 3);
    }
}

/// `count` requests with a generous timeout are each refused, well before the timeout: a
/// reject, not a drop.
fn assert_refused_promptly(lab: &Lab, from: &str, protocol: Protocol, address: SocketAddr, count: usize) {
    for _ in 0..count {
        let started = Instant::now();
        let outcome = lab.request(from, protocol, address, Duration::from_secs(3));
        let took = started.elapsed();
        assert!(
            matches!(outcome, Err(ClientError::Refused)),
            "{protocol:?} {address}: expected Refused, got {outcome:?} after {took:?}"
        );
        assert!(took < Duration::from_secs(1), "{protocol:?} {address}: refused only after {took:?}");
    }
}
