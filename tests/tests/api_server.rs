//! Against a real API server: Services and EndpointSlices created through the API are
//! programmed, updated and removed, and the rules survive the API server going away.
//!
//! Runs only when `KPROXY_E2E_KUBECONFIG` names a kubeconfig (a kind or k3s cluster, say);
//! otherwise it says plainly that it did not run. The agent runs in the lab's node namespace
//! and reaches the API server through a forwarder on the namespace's loopback, so nothing is
//! routed outside the lab; taking the forwarder down plays the API server going away.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_e2e::forwarder::Forwarder;
use kproxy_e2e::{ClientError, Lab, Pod, Protocol, root_or_skip, say_skipped};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// The variable naming the cluster's kubeconfig.
const KUBECONFIG_VARIABLE: &str = "KPROXY_E2E_KUBECONFIG";
/// Where the API server appears inside the node namespace.
const FORWARDER_PORT: u16 = 16443;

fn slice(namespace: &str, pods: &[(&Pod, bool)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": namespace, "labels": {
            "kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "kproxy-e2e"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": pods.iter().map(|(pod, ready)| json!({
            "addresses": [pod.ip().to_string()], "conditions": {"ready": ready}, "nodeName": "node1"})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// The kubeconfig, rewritten to reach the API server through the forwarder.
fn forwarded_kubeconfig(original: &Kubeconfig, lab: &Lab, local: SocketAddr) -> (PathBuf, SocketAddr) {
    let mut config = original.clone();
    let context = config.current_context.clone().unwrap_or_default();
    let cluster_name = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("current context");
    let cluster = config
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_mut())
        .expect("cluster");
    let server = cluster.server.clone().expect("server");
    let authority = server.trim_start_matches("https://").split('/').next().unwrap_or_default().to_string();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host.to_string(), port.parse().expect("server port")),
        _ => (authority.clone(), 443),
    };
    let host = host.trim_matches(['[', ']']).to_string();
    let upstream = (host.as_str(), port).to_socket_addrs().expect("resolve").next().expect("address");
    cluster.server = Some(format!("https://{local}"));
    cluster.tls_server_name.get_or_insert(host);
    let path = lab.scratch_path().join("kubeconfig.json");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    (path, upstream)
}

#[test]
fn api_server_objects_should_be_programmed_updated_and_removed_and_survive_an_api_outage() {
    let Some(kubeconfig) = std::env::var_os(KUBECONFIG_VARIABLE) else {
        say_skipped(&format!(
            "the API-server e2e test did not run; set {KUBECONFIG_VARIABLE} to a cluster's kubeconfig"
        ));
        return;
    };
    if !root_or_skip() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let original = Kubeconfig::read_from(&kubeconfig).expect("read the kubeconfig");
    let config = runtime
        .block_on(kube::Config::from_custom_kubeconfig(original.clone(), &KubeConfigOptions::default()))
        .expect("a client configuration for the cluster");
    let client =
        runtime.block_on(async { kube::Client::try_from(config) }).expect("a client for the cluster");
    let namespace = format!("kproxy-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    runtime
        .block_on(namespaces.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        ))
        .expect("create the test namespace");
    let cleanup = scopeguard(|| {
        let _ = runtime.block_on(namespaces.delete(&namespace, &DeleteParams::default()));
    });

    let lab = Lab::new();
    let client_pod = lab.add_pod("client");
    let pods = lab.add_pods(&["pod1", "pod2"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
    .unwrap();
    let service =
        runtime.block_on(services.create(&PostParams::default(), &service)).expect("create the Service");
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).expect("an allocated cluster IP");
    let address: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
    runtime
        .block_on(
            slices.create(&PostParams::default(), &slice(&namespace, &[(&pods[0], true), (&pods[1], true)])),
        )
        .expect("create the slice");

    let (path, upstream) =
        forwarded_kubeconfig(&original, &lab, SocketAddr::from(([127, 0, 0, 1], FORWARDER_PORT)));
    let forwarder = Forwarder::start(lab.node_netns(), FORWARDER_PORT, upstream);
    let _agent = lab.start_kproxy_with_kubeconfig(&path, &["--min-sync-period", "100ms"]);
    lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &pods);

    let patch = |pods: &[(&Pod, bool)]| {
        runtime
            .block_on(slices.patch(
                "web-1",
                &PatchParams::apply("kproxy-e2e").force(),
                &Patch::Apply(slice(&namespace, pods)),
            ))
            .expect("update the slice");
    };
    patch(&[(&pods[0], true), (&pods[1], false)]);
    let took = lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, [&pods[0]]);
    eprintln!("pod2 turned not ready through the API: out of rotation after {took:?}");

    forwarder.take_down();
    patch(&[(&pods[0], true), (&pods[1], true)]);
    std::thread::sleep(Duration::from_secs(2));
    let tally = lab.tally(client_pod.netns(), Protocol::Tcp, address, 20, Duration::from_secs(2));
    assert_eq!(tally.failures(), 0, "the rules stay while the API server is away: {tally}");
    assert_eq!(tally.count("pod2"), 0, "changes made meanwhile are not known yet: {tally}");
    forwarder.bring_back();
    let took = lab.wait_for_answers(client_pod.netns(), Protocol::Tcp, address, &pods);
    eprintln!("the API server came back: the change made meanwhile was programmed {took:?} later");

    runtime.block_on(services.delete("web", &DeleteParams::default())).expect("delete the Service");
    lab.eventually("the deleted Service no longer answers", || {
        match lab.request(client_pod.netns(), Protocol::Tcp, address, Duration::from_secs(1)) {
            Err(ClientError::Timeout | ClientError::Refused) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    drop(cleanup);
}

/// Runs `f` when dropped, also while a failing test unwinds.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
