//! Who is masqueraded on the way to a ClusterIP: with `--cluster-cidr`, clients outside the pod
//! CIDR are and pods are not (upstream "should preserve source pod IP for traffic thru service
//! cluster IP"); with `--masquerade-all`, everyone is.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kproxy_e2e::{
    CLUSTER_CIDR, Endpoint, EndpointSlice, Lab, Pod, Protocol, Service, ServicePort, root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A local `pod1` and a remote `rpod1` behind ClusterIP `cluster_ip`:80 → 8080, written to the
/// manifests.
fn web(lab: &Lab, cluster_ip: &str) -> (Service, Pod, Pod) {
    let (pod1, rpod1) = (lab.add_pod("pod1"), lab.add_remote_pod("rpod1"));
    for pod in [&pod1, &rpod1] {
        pod.serve_tcp(8080);
    }
    let service = Service::cluster_ip("default", "web", cluster_ip).port(ServicePort::tcp("http", 80, 8080));
    let slice = EndpointSlice::for_service(&service).endpoints([Endpoint::of(&pod1), Endpoint::of(&rpod1)]);
    lab.manifests().write("web.yaml", &[&service, &slice]);
    (service, pod1, rpod1)
}

#[test]
fn cluster_cidr_should_masquerade_off_cluster_clients_and_preserve_pod_sources() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    // The upstream router sends the Service CIDR to the node, so an off-cluster client can reach
    // a ClusterIP directly.
    lab.route_at_gateway_via_node("10.96.0.0/16");
    let client = lab.add_pod("client");
    let (service, pod1, rpod1) = web(&lab, "10.96.4.10");
    let _agent = lab.start_kproxy_with(lab.manifests().path(), &["--cluster-cidr", CLUSTER_CIDR]);
    let address = service.address("http");

    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &rpod1]);
    let from_pod = lab.tally(client.netns(), Protocol::Tcp, address, 40, TIMEOUT);
    eprintln!("pod → {address}: {from_pod}");
    assert_eq!(from_pod.failures(), 0, "{from_pod}");
    assert_eq!(
        from_pod.peers(),
        BTreeSet::from([IpAddr::from(client.ip())]),
        "a pod client must keep its address: {from_pod}"
    );

    lab.wait_for_answers(ext.netns(), Protocol::Tcp, address, [&pod1, &rpod1]);
    let from_outside = lab.tally(ext.netns(), Protocol::Tcp, address, 40, TIMEOUT);
    eprintln!("ext → {address}: {from_outside}");
    assert_eq!(from_outside.failures(), 0, "{from_outside}");
    let node_addresses = lab.node_addresses();
    assert!(
        from_outside.peers().iter().all(|peer| node_addresses.contains(peer)),
        "a client outside the cluster CIDR must be masqueraded to a node address: {from_outside}"
    );
}

#[test]
fn masquerade_all_should_masquerade_pod_clients_too() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let (service, pod1, rpod1) = web(&lab, "10.96.4.20");
    let _agent =
        lab.start_kproxy_with(lab.manifests().path(), &["--cluster-cidr", CLUSTER_CIDR, "--masquerade-all"]);
    let address = service.address("http");

    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pod1, &rpod1]);
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 40, TIMEOUT);
    eprintln!("pod → {address}: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    let node_addresses = lab.node_addresses();
    assert!(
        tally.peers().iter().all(|peer| node_addresses.contains(peer)),
        "--masquerade-all must masquerade a pod client to a node address: {tally}"
    );
}
