//! externalTrafficPolicy and internalTrafficPolicy: Local keeps traffic on this node's endpoints
//! (and, for external traffic, the client's address); with none here the traffic is dropped;
//! pods and the node itself still get Cluster behaviour on external frontends.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kproxy_e2e::{
    CLUSTER_CIDR, Endpoint, EndpointSlice, Lab, Manifest, NODE_UPLINK_IP, Node, Pod, Protocol, Service,
    ServicePort, TrafficPolicy, root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);
const LB_IP: [u8; 4] = [203, 0, 113, 30];

/// A LoadBalancer Service `lb` (NodePort 30090, ingress 203.0.113.30) with the given external
/// policy.
fn load_balancer(cluster_ip: &str, policy: TrafficPolicy) -> Service {
    Service::load_balancer("default", "lb", cluster_ip)
        .port(ServicePort::tcp("http", 80, 8080).node_port(30090))
        .load_balancer_ip("203.0.113.30")
        .external_traffic_policy(policy)
}

fn slice(service: &Service, endpoints: &[&Pod]) -> EndpointSlice {
    EndpointSlice::for_service(service).endpoints(endpoints.iter().map(|pod| Endpoint::of(pod)))
}

/// Writes the Node and `documents` as `<file>`.
fn write(lab: &Lab, file: &str, documents: &[&dyn Manifest]) {
    lab.manifests().write("node.yaml", &[&Node::lab_node()]);
    lab.manifests().write(file, documents);
}

fn serve(pods: &[&Pod]) {
    for pod in pods {
        pod.serve_tcp(8080);
    }
}

#[test]
fn local_external_policy_should_reach_only_local_endpoints_with_the_client_address() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let (pod1, pod2, rpod1) = (lab.add_pod("pod1"), lab.add_pod("pod2"), lab.add_remote_pod("rpod1"));
    serve(&[&pod1, &pod2, &rpod1]);
    let service = load_balancer("10.96.2.10", TrafficPolicy::Local);
    write(&lab, "lb.yaml", &[&service, &slice(&service, &[&pod1, &pod2, &rpod1])]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    for frontend in
        [service.node_port_on(NODE_UPLINK_IP, "http"), service.address_on(IpAddr::from(LB_IP), "http")]
    {
        lab.wait_for_answers(ext.netns(), Protocol::Tcp, frontend, [&pod1, &pod2]);
        let tally = lab.tally(ext.netns(), Protocol::Tcp, frontend, 40, TIMEOUT);
        eprintln!("ext → {frontend}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert_eq!(tally.count("rpod1"), 0, "a remote endpoint answered: {tally}");
        assert_eq!(
            tally.peers(),
            BTreeSet::from([IpAddr::from(ext.ip())]),
            "eTP=Local must keep the client's address: {tally}"
        );
    }
}

#[test]
fn local_external_policy_without_local_endpoints_should_drop_external_traffic() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let client = lab.add_pod("client");
    let rpod1 = lab.add_remote_pod("rpod1");
    serve(&[&rpod1]);
    let service = load_balancer("10.96.2.20", TrafficPolicy::Local);
    write(&lab, "lb.yaml", &[&service, &slice(&service, &[&rpod1])]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    // The ClusterIP (internal policy Cluster) reaches the remote endpoint: the rules are in.
    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&rpod1]);
    // Without the agent the NodePort would be refused (nothing listens) and the LB IP dropped
    // by the gateway; with it both are dropped, not rejected.
    lab.assert_dropped(ext.netns(), Protocol::Tcp, service.node_port_on(NODE_UPLINK_IP, "http"), 2);
    lab.assert_dropped(ext.netns(), Protocol::Tcp, service.address_on(IpAddr::from(LB_IP), "http"), 2);
}

#[test]
fn local_external_policy_should_give_pods_and_the_node_cluster_behaviour() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let (pod1, rpod1) = (lab.add_pod("pod1"), lab.add_remote_pod("rpod1"));
    serve(&[&pod1, &rpod1]);
    let service = load_balancer("10.96.2.30", TrafficPolicy::Local);
    write(&lab, "lb.yaml", &[&service, &slice(&service, &[&pod1, &rpod1])]);
    let _agent = lab.start_kproxy_with(lab.manifests().path(), &["--cluster-cidr", CLUSTER_CIDR]);

    let vip = service.address_on(IpAddr::from(LB_IP), "http");
    // A pod (source in the cluster CIDR) reaching the LB IP: short-circuited to Cluster
    // behaviour, remote endpoints included, its own address kept.
    lab.wait_for_answers(client.netns(), Protocol::Tcp, vip, [&pod1, &rpod1]);
    let tally = lab.tally(client.netns(), Protocol::Tcp, vip, 40, TIMEOUT);
    eprintln!("pod → {vip}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.peers(), BTreeSet::from([IpAddr::from(client.ip())]), "{tally}");
    // The node itself: Cluster behaviour too (masqueraded).
    lab.wait_for_answers(lab.node_netns(), Protocol::Tcp, vip, [&pod1, &rpod1]);
}

#[test]
fn cluster_external_policy_should_masquerade_external_traffic() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let (pod1, rpod1) = (lab.add_pod("pod1"), lab.add_remote_pod("rpod1"));
    serve(&[&pod1, &rpod1]);
    let service = load_balancer("10.96.2.40", TrafficPolicy::Cluster);
    write(&lab, "lb.yaml", &[&service, &slice(&service, &[&pod1, &rpod1])]);
    let _agent = lab.start_kproxy_with(lab.manifests().path(), &["--cluster-cidr", CLUSTER_CIDR]);

    let node_addresses = lab.node_addresses();
    for frontend in
        [service.node_port_on(NODE_UPLINK_IP, "http"), service.address_on(IpAddr::from(LB_IP), "http")]
    {
        lab.wait_for_answers(ext.netns(), Protocol::Tcp, frontend, [&pod1, &rpod1]);
        let tally = lab.tally(ext.netns(), Protocol::Tcp, frontend, 40, TIMEOUT);
        eprintln!("ext → {frontend}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        assert!(
            tally.peers().iter().all(|peer| node_addresses.contains(peer)),
            "eTP=Cluster must masquerade to a node address: {tally}"
        );
    }
}

#[test]
fn local_internal_policy_should_reach_only_local_endpoints_from_a_pod() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let (pod1, pod2) = (lab.add_pod("pod1"), lab.add_pod("pod2"));
    let (rpod1, rpod2) = (lab.add_remote_pod("rpod1"), lab.add_remote_pod("rpod2"));
    serve(&[&pod1, &pod2, &rpod1, &rpod2]);
    let service = Service::cluster_ip("default", "web", "10.96.2.50")
        .port(ServicePort::tcp("http", 80, 8080))
        .internal_traffic_policy(TrafficPolicy::Local);
    write(&lab, "web.yaml", &[&service, &slice(&service, &[&pod1, &rpod1, &pod2, &rpod2])]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let address = service.address("http");
    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &pod2]);
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 40, TIMEOUT);
    eprintln!("pod → {address}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.count("rpod1") + tally.count("rpod2"), 0, "{tally}");
}

#[test]
fn local_internal_policy_without_local_endpoints_should_drop_pod_traffic() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let rpod1 = lab.add_remote_pod("rpod1");
    serve(&[&rpod1]);
    let local = Service::cluster_ip("default", "local", "10.96.2.60")
        .port(ServicePort::tcp("http", 80, 8080))
        .internal_traffic_policy(TrafficPolicy::Local);
    // The same endpoint behind a Cluster-policy Service in the same file: once it answers, the
    // file's rules are in.
    let marker =
        Service::cluster_ip("default", "marker", "10.96.2.61").port(ServicePort::tcp("http", 80, 8080));
    write(&lab, "web.yaml", &[&local, &slice(&local, &[&rpod1]), &marker, &slice(&marker, &[&rpod1])]);
    let _agent = lab.start_kproxy(lab.manifests().path());

    lab.wait_for_answers(client.netns(), Protocol::Tcp, marker.address("http"), [&rpod1]);
    lab.assert_dropped(client.netns(), Protocol::Tcp, local.address("http"), 2);
}
