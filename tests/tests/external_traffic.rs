//! Traffic from outside the cluster (the lab's external client behind the gateway): NodePorts on
//! the node's primary address, external IPs, load-balancer IPs and their source ranges, with the
//! default externalTrafficPolicy Cluster (masqueraded); and the rejects the contract promises.

use std::net::IpAddr;
use std::time::Duration;

use kproxy_e2e::{
    ClientError, Endpoint, EndpointSlice, ExternalClient, Lab, NODE_UPLINK_IP, Node, Pod, Protocol, Service,
    ServicePort, root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);

/// An external client, a local pod `pod1` and a remote pod `rpod1`, both serving TCP 8080.
fn lab_with_local_and_remote_pods() -> (Lab, ExternalClient, Pod, Pod) {
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let local = lab.add_pod("pod1");
    let remote = lab.add_remote_pod("rpod1");
    for pod in [&local, &remote] {
        pod.serve_tcp(8080);
    }
    (lab, ext, local, remote)
}

/// Writes the Node and `service` with one IPv4 slice of `endpoints`, then starts the agent.
fn start(lab: &Lab, service: &Service, endpoints: &[&Pod]) -> kproxy_e2e::Agent {
    let slice = EndpointSlice::for_service(service).endpoints(endpoints.iter().map(|pod| Endpoint::of(pod)));
    lab.manifests().write("node.yaml", &[&Node::lab_node()]);
    lab.manifests().write(&format!("{}.yaml", service.name), &[service, &slice]);
    lab.start_kproxy(lab.manifests().path())
}

#[test]
fn node_port_should_be_answered_by_local_and_remote_endpoints_from_outside() {
    if !root_or_skip() {
        return;
    }
    let (lab, ext, local, remote) = lab_with_local_and_remote_pods();
    let service = Service::node_port("default", "web", "10.96.1.10")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30080));
    let _agent = start(&lab, &service, &[&local, &remote]);

    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    lab.wait_for_answers(ext.netns(), Protocol::Tcp, node_port, [&local, &remote]);
    let tally = lab.tally(ext.netns(), Protocol::Tcp, node_port, 40, TIMEOUT);
    eprintln!("ext → {node_port}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.ports(), [8080].into(), "{tally}");
}

#[test]
fn node_port_should_be_served_to_the_node_itself_but_not_on_its_loopback_address() {
    if !root_or_skip() {
        return;
    }
    let (lab, ext, local, remote) = lab_with_local_and_remote_pods();
    let service = Service::node_port("default", "web", "10.96.1.20")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30080));
    let _agent = start(&lab, &service, &[&local, &remote]);

    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    lab.wait_for_answers(ext.netns(), Protocol::Tcp, node_port, [&local, &remote]);
    lab.wait_for_answers(lab.node_netns(), Protocol::Tcp, node_port, [&local, &remote]);
    // kube-proxy's nftables mode serves no NodePort on 127.0.0.1 (documented behaviour): nothing
    // is translated, and nothing listens there.
    let loopback = service.node_port_on(IpAddr::from([127, 0, 0, 1]), "http");
    let outcome = lab.tcp_request(lab.node_netns(), loopback, TIMEOUT);
    assert!(matches!(outcome, Err(ClientError::Refused)), "{loopback} from the node: {outcome:?}");
}

#[test]
fn cluster_external_policy_should_masquerade_node_port_traffic_to_a_node_address() {
    if !root_or_skip() {
        return;
    }
    let (lab, ext, local, remote) = lab_with_local_and_remote_pods();
    let service = Service::node_port("default", "web", "10.96.1.30")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30080));
    let _agent = start(&lab, &service, &[&local, &remote]);

    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    lab.wait_for_answers(ext.netns(), Protocol::Tcp, node_port, [&local, &remote]);
    let tally = lab.tally(ext.netns(), Protocol::Tcp, node_port, 40, TIMEOUT);
    eprintln!("ext → {node_port}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    let node_addresses = lab.node_addresses();
    assert!(
        tally.peers().iter().all(|peer| node_addresses.contains(peer)),
        "the pods should see a node address, never the client {}: {tally}",
        ext.ip()
    );
}

#[test]
fn external_ip_should_be_answered_from_outside() {
    if !root_or_skip() {
        return;
    }
    let (lab, ext, local, remote) = lab_with_local_and_remote_pods();
    let service = Service::cluster_ip("default", "web", "10.96.1.40")
        .port(ServicePort::tcp("http", 80, 8080))
        .external_ip("203.0.113.20");
    let _agent = start(&lab, &service, &[&local, &remote]);

    let external = service.address_on(IpAddr::from([203, 0, 113, 20]), "http");
    lab.wait_for_answers(ext.netns(), Protocol::Tcp, external, [&local, &remote]);
    let tally = lab.tally(ext.netns(), Protocol::Tcp, external, 40, TIMEOUT);
    eprintln!("ext → {external}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert!(!tally.peers().contains(&IpAddr::from(ext.ip())), "eTP=Cluster masquerades: {tally}");
}

#[test]
fn load_balancer_ip_should_be_answered_and_a_proxy_mode_ingress_left_alone() {
    if !root_or_skip() {
        return;
    }
    let (lab, ext, local, remote) = lab_with_local_and_remote_pods();
    let service = Service::load_balancer("default", "lb", "10.96.1.50")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30081))
        .load_balancer_ip("203.0.113.10")
        .load_balancer_proxy_ip("203.0.113.11");
    let _agent = start(&lab, &service, &[&local, &remote]);

    let vip = service.address_on(IpAddr::from([203, 0, 113, 10]), "http");
    lab.wait_for_answers(ext.netns(), Protocol::Tcp, vip, [&local, &remote]);
    let tally = lab.tally(ext.netns(), Protocol::Tcp, vip, 40, TIMEOUT);
    eprintln!("ext → {vip}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    // ipMode: Proxy means the load balancer itself proxies: the node must not capture the address
    // (the lab's gateway then drops what the node sends back).
    let proxied = service.address_on(IpAddr::from([203, 0, 113, 11]), "http");
    lab.assert_dropped(ext.netns(), Protocol::Tcp, proxied, 2);
}

#[test]
fn load_balancer_source_ranges_should_drop_other_sources_but_not_their_node_port_traffic() {
    if !root_or_skip() {
        return;
    }
    let (lab, ext, local, remote) = lab_with_local_and_remote_pods();
    let service = Service::load_balancer("default", "lb", "10.96.1.60")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30082))
        .load_balancer_ip("203.0.113.12")
        .source_range("192.168.200.2/32");
    let _agent = start(&lab, &service, &[&local, &remote]);

    let vip = service.address_on(IpAddr::from([203, 0, 113, 12]), "http");
    let (allowed, other) = (ext.ip(), ext.extra_ips()[0]);
    lab.wait_for_answers(ext.from(allowed), Protocol::Tcp, vip, [&local, &remote]);
    lab.assert_dropped(ext.from(other), Protocol::Tcp, vip, 2);
    // The source ranges guard the load-balancer IPs only: the same Service's NodePort serves
    // the other source (kube-proxy's "nodePort bypasses LoadBalancerSourceRanges").
    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    let tally = lab.tally(ext.from(other), Protocol::Tcp, node_port, 20, TIMEOUT);
    eprintln!("{other} → {node_port}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
}

#[test]
fn cluster_ip_should_refuse_a_port_it_does_not_serve() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let pod1 = lab.add_pod("pod1");
    pod1.serve_tcp(8080);
    pod1.serve_udp(8080);
    let service =
        Service::cluster_ip("default", "web", "10.96.1.70").port(ServicePort::tcp("http", 80, 8080));
    let _agent = start(&lab, &service, &[&pod1]);

    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&pod1]);
    // Without the agent the lab drops this (the gateway does not forward): a refusal is the
    // agent's reject of a valid ClusterIP on a port the Service does not define.
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let wrong_port = std::net::SocketAddr::new(service.address("http").ip(), 81);
        let outcome = lab.request(client.netns(), protocol, wrong_port, TIMEOUT);
        assert!(matches!(outcome, Err(ClientError::Refused)), "{protocol:?} {wrong_port}: {outcome:?}");
    }
}
