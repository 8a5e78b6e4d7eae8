//! `sessionAffinity: ClientIP`: one client address sticks to one endpoint, on a ClusterIP and on
//! a NodePort (the conformance shapes), until the affinity times out; it can be switched on and
//! off on a live Service; adding an endpoint does not move existing clients, and neither does
//! restarting the agent.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use kproxy_e2e::{
    Endpoint, EndpointSlice, ExternalClient, Lab, NODE_UPLINK_IP, Node, Pod, Protocol, Service, ServicePort,
    Source, root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);
/// The affinity timeout of the timeout tests…
const AFFINITY_TIMEOUT_SECONDS: u32 = 2;
/// …and how long the client stays idle between two rounds, comfortably longer.
const IDLE: Duration = Duration::from_secs(3);
/// Rounds before giving up on seeing the choice change (with 4 endpoints, the chance that a
/// working timeout still shows one endpoint in every round is (1/4)^7).
const ROUNDS: usize = 8;

/// A NodePort Service `web` (ClusterIP `cluster_ip`, NodePort 30110), with ClientIP affinity
/// when `affinity` is `Some` (its timeout inside).
fn web(cluster_ip: &str, affinity: Option<Option<u32>>) -> Service {
    let service = Service::node_port("default", "web", cluster_ip)
        .port(ServicePort::tcp("http", 80, 8080).node_port(30110));
    match affinity {
        Some(timeout) => service.client_ip_affinity(timeout),
        None => service,
    }
}

fn write(lab: &Lab, service: &Service, endpoints: &[Pod]) {
    let slice = EndpointSlice::for_service(service).endpoints(endpoints.iter().map(Endpoint::of));
    lab.manifests().write("node.yaml", &[&Node::lab_node()]);
    lab.manifests().write("web.yaml", &[service, &slice]);
}

fn serving_pods(lab: &Lab, names: &[&str]) -> Vec<Pod> {
    let pods = lab.add_pods(names);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    pods
}

/// Asserts that `count` connections from `from` to `address` all reach one endpoint; returns it.
#[track_caller]
fn assert_sticky(lab: &Lab, from: Source<'_>, address: SocketAddr, count: usize) -> String {
    let tally = lab.tally(from, Protocol::Tcp, address, count, TIMEOUT);
    eprintln!("{from} → {address}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    assert_eq!(tally.pods().len(), 1, "{count} connections of one client should reach one endpoint: {tally}");
    tally.pods()[0].to_owned()
}

/// Waits until connections from `from` to `address` stick to one endpoint.
#[track_caller]
fn wait_until_sticky(lab: &Lab, from: Source<'_>, address: SocketAddr) {
    lab.eventually(&format!("{from} → {address} sticky"), || {
        let tally = lab.tally(from, Protocol::Tcp, address, 20, Duration::from_millis(300));
        if tally.failures() == 0 && tally.pods().len() == 1 { Ok(()) } else { Err(tally.to_string()) }
    });
}

/// The upstream "affinity timeout" check: rounds of a few connections, each round sticky, with
/// idle pauses longer than the timeout between rounds, until more than one endpoint was seen.
fn assert_affinity_expires(lab: &Lab, from: Source<'_>, address: SocketAddr) {
    let mut seen = BTreeSet::new();
    for round in 1..=ROUNDS {
        seen.insert(assert_sticky(lab, from, address, 5));
        if seen.len() > 1 {
            eprintln!("after {round} rounds the affinity had expired and moved: {seen:?}");
            return;
        }
        thread::sleep(IDLE);
    }
    panic!("{from} → {address} stayed on {seen:?} for {ROUNDS} rounds, {IDLE:?} idle apart");
}

/// A lab with a pod client, the external client and three serving pods.
struct Clients {
    lab: Lab,
    client: Pod,
    ext: ExternalClient,
    endpoints: Vec<Pod>,
}

impl Clients {
    /// `None` when the tests cannot run here (not root).
    fn set_up() -> Option<Clients> {
        if !root_or_skip() {
            return None;
        }
        let lab = Lab::new();
        let client = lab.add_pod("client");
        let ext = lab.add_external_client();
        let endpoints = serving_pods(&lab, &["pod1", "pod2", "pod3"]);
        Some(Clients { lab, client, ext, endpoints })
    }
}

/// Five clients of `service`: `client` to its ClusterIP and four addresses of `ext` to its node
/// port, each with the endpoint it sticks to.
fn sticky_clients<'a>(
    lab: &Lab,
    client: &'a Pod,
    ext: &'a ExternalClient,
    service: &Service,
) -> Vec<(Source<'a>, SocketAddr, String)> {
    let cluster_ip = service.address("http");
    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    lab.wait_for_answer(client.netns(), Protocol::Tcp, cluster_ip);
    let mut clients: Vec<(Source<'a>, SocketAddr)> = vec![(client.netns().into(), cluster_ip)];
    clients.extend(ext.extra_ips()[..4].iter().map(|ip| (ext.from(*ip), node_port)));
    clients
        .into_iter()
        .map(|(from, address)| (from, address, assert_sticky(lab, from, address, 10)))
        .collect()
}

/// Asserts that each of `clients` still reaches the endpoint it stuck to before `what`.
#[track_caller]
fn assert_still_sticky(lab: &Lab, clients: &[(Source<'_>, SocketAddr, String)], what: &str) {
    for (from, address, endpoint) in clients {
        let now = assert_sticky(lab, *from, *address, 20);
        assert_eq!(&now, endpoint, "{from} → {address} moved from {endpoint} to {now} {what}");
    }
}

#[test]
fn client_ip_affinity_should_keep_a_cluster_ip_client_on_one_endpoint() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = serving_pods(&lab, &["pod1", "pod2", "pod3"]);
    let service = web("10.96.3.10", Some(None));
    write(&lab, &service, &endpoints);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let address = service.address("http");
    lab.wait_for_answer(client.netns(), Protocol::Tcp, address);
    assert_sticky(&lab, client.netns().into(), address, 50);
}

#[test]
fn client_ip_affinity_should_keep_a_node_port_client_on_one_endpoint() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let endpoints = serving_pods(&lab, &["pod1", "pod2", "pod3"]);
    let service = web("10.96.3.20", Some(None));
    write(&lab, &service, &endpoints);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    lab.wait_for_answer(ext.netns(), Protocol::Tcp, node_port);
    assert_sticky(&lab, ext.netns().into(), node_port, 50);
    // Another client address has its own, equally sticky choice.
    assert_sticky(&lab, ext.from(ext.extra_ips()[0]), node_port, 50);
}

#[test]
fn client_ip_affinity_should_expire_after_its_timeout_on_a_cluster_ip() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let endpoints = serving_pods(&lab, &["pod1", "pod2", "pod3", "pod4"]);
    let service = web("10.96.3.30", Some(Some(AFFINITY_TIMEOUT_SECONDS)));
    write(&lab, &service, &endpoints);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let address = service.address("http");
    lab.wait_for_answer(client.netns(), Protocol::Tcp, address);
    assert_affinity_expires(&lab, client.netns().into(), address);
}

#[test]
fn client_ip_affinity_should_expire_after_its_timeout_on_a_node_port() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let endpoints = serving_pods(&lab, &["pod1", "pod2", "pod3", "pod4"]);
    let service = web("10.96.3.40", Some(Some(AFFINITY_TIMEOUT_SECONDS)));
    write(&lab, &service, &endpoints);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let node_port = service.node_port_on(NODE_UPLINK_IP, "http");
    lab.wait_for_answer(ext.netns(), Protocol::Tcp, node_port);
    assert_affinity_expires(&lab, ext.netns().into(), node_port);
}

#[test]
fn client_ip_affinity_should_switch_on_and_off_on_a_live_service() {
    let Some(Clients { lab, client, ext, endpoints }) = Clients::set_up() else { return };
    let cluster_ip = "10.96.3.50";
    write(&lab, &web(cluster_ip, None), &endpoints);
    let _agent = lab.start_kproxy(lab.manifests().path());

    let service = web(cluster_ip, None);
    let frontends: [(Source<'_>, SocketAddr); 2] = [
        (client.netns().into(), service.address("http")),
        (ext.netns().into(), service.node_port_on(NODE_UPLINK_IP, "http")),
    ];
    for (from, address) in frontends {
        lab.wait_for_answers(from, Protocol::Tcp, address, &endpoints);
    }
    for switch in ["on", "off", "on again"] {
        let affinity = (switch != "off").then_some(None);
        write(&lab, &web(cluster_ip, affinity), &endpoints);
        for (from, address) in frontends {
            let took = if affinity.is_some() {
                let started = std::time::Instant::now();
                wait_until_sticky(&lab, from, address);
                assert_sticky(&lab, from, address, 30);
                started.elapsed()
            } else {
                lab.wait_for_answers(from, Protocol::Tcp, address, &endpoints)
            };
            eprintln!("affinity {switch}: {from} → {address} took effect after {took:?}");
        }
    }
}

#[test]
fn client_ip_affinity_should_keep_existing_clients_on_their_endpoint_when_an_endpoint_is_added() {
    let Some(Clients { lab, client, ext, mut endpoints }) = Clients::set_up() else { return };
    let service = web("10.96.3.60", Some(None));
    let marker =
        Service::cluster_ip("default", "marker", "10.96.3.61").port(ServicePort::tcp("http", 80, 8080));
    write(&lab, &service, &endpoints);
    let _agent = lab.start_kproxy(lab.manifests().path());
    let clients = sticky_clients(&lab, &client, &ext, &service);

    // pod4 joins; in the same file a marker Service served by pod4 alone shows when the agent
    // has applied the change.
    endpoints.extend(serving_pods(&lab, &["pod4"]));
    let slice = EndpointSlice::for_service(&service).endpoints(endpoints.iter().map(Endpoint::of));
    let marker_slice = EndpointSlice::for_service(&marker).endpoint(Endpoint::of(&endpoints[3]));
    lab.manifests().write("web.yaml", &[&service, &slice, &marker, &marker_slice]);
    lab.wait_for_answers(client.netns(), Protocol::Tcp, marker.address("http"), [&endpoints[3]]);
    assert_still_sticky(&lab, &clients, "when pod4 was added");
}

#[test]
fn client_ip_affinity_should_survive_an_agent_restart() {
    let Some(Clients { lab, client, ext, endpoints }) = Clients::set_up() else { return };
    let service = web("10.96.3.70", Some(None));
    write(&lab, &service, &endpoints);
    let agent = lab.start_kproxy(lab.manifests().path());
    let clients = sticky_clients(&lab, &client, &ext, &service);

    agent.kill();
    agent.start();
    // A marker Service only the restarted agent can have programmed shows that it has synced.
    let marker =
        Service::cluster_ip("default", "marker", "10.96.3.71").port(ServicePort::tcp("http", 80, 8080));
    let marker_slice = EndpointSlice::for_service(&marker).endpoint(Endpoint::of(&endpoints[0]));
    lab.manifests().write("marker.yaml", &[&marker, &marker_slice]);
    lab.wait_for_answers(client.netns(), Protocol::Tcp, marker.address("http"), [&endpoints[0]]);

    // With the affinity entries lost, all five staying put would be a (1/3)^5 chance.
    assert_still_sticky(&lab, &clients, "across the restart");
}
