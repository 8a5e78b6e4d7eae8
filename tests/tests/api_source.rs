//! `kproxy run --kubeconfig`: the API source end to end against a stand-in API server
//! ([`kproxy_e2e::fake_api`]) on the node namespace's loopback. The agent lists Services and
//! EndpointSlices as JSON through kube-rs, programs them, keeps the rules while the API server
//! is gone, and after it comes back with another resource version (its watches get `410
//! Expired`) lists again and programs what changed. Runs in CI, without a cluster; the same
//! behaviour against a real API server is `api_server.rs`, behind `KPROXY_E2E_KUBECONFIG`.

use std::collections::BTreeSet;
use std::time::Duration;

use kproxy_e2e::fake_api::{ApiObjects, FakeApi};
use kproxy_e2e::wait::eventually;
use kproxy_e2e::{Pod, Protocol, Source, root_or_skip};
use serde_json::{Value, json};

const CLUSTER_IP: &str = "10.96.5.10";
/// How long the agent may take to list again once the API server is back.
const RELIST_DEADLINE: Duration = Duration::from_secs(45);

/// Service `default/web` at [`CLUSTER_IP`]:80 → 8080, served by `endpoints`, at `version`.
fn cluster(version: &str, endpoints: &[&Pod]) -> ApiObjects {
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": version},
        "spec": {"clusterIP": CLUSTER_IP, "clusterIPs": [CLUSTER_IP],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    });
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|pod| json!({"addresses": [pod.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": version,
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    ApiObjects {
        resource_version: version.into(),
        services: vec![service],
        endpoint_slices: vec![slice],
        nodes: Vec::new(),
    }
}

#[test]
fn api_source_should_program_keep_the_rules_without_the_api_server_and_relist_when_it_returns() {
    if !root_or_skip() {
        return;
    }
    let lab = kproxy_e2e::Lab::new();
    let client = lab.add_pod("client");
    let pods = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    let address: std::net::SocketAddr = format!("{CLUSTER_IP}:80").parse().unwrap();

    let api = FakeApi::start(lab.node_netns(), &cluster("1", &[&pods[0], &pods[1]]));
    let port = api.port();
    let kubeconfig = api.kubeconfig(lab.scratch_path());
    let agent = lab.start_kproxy_with_kubeconfig(&kubeconfig, &[]);
    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, [&pods[0], &pods[1]]);

    drop(api);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.is_running(), "the agent outlives the API server");
    let tally = lab.tally(Source::from(client.netns()), Protocol::Tcp, address, 20, Duration::from_secs(2));
    eprintln!("without the API server: {tally}");
    assert_eq!(tally.failures(), 0, "the rules stay while the API server is away: {tally}");

    let _api = FakeApi::start_on(lab.node_netns(), port, &cluster("2", &[&pods[1], &pods[2]]));
    // The watchers retry with kube-rs's backoff (0.8 s doubling, jittered, at most 30 s), then
    // meet `410 Expired` and list again: this takes seconds, not the usual change deadline.
    let want = BTreeSet::from(["pod2", "pod3"]);
    eventually("the relisted endpoints pod2 and pod3 answering", RELIST_DEADLINE, || {
        let tally =
            lab.tally(Source::from(client.netns()), Protocol::Tcp, address, 20, Duration::from_secs(1));
        let seen: BTreeSet<&str> = tally.pods().into_iter().collect();
        if tally.failures() == 0 && seen == want { Ok(()) } else { Err(tally.to_string()) }
    });
}
