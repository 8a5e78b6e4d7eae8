//! The agent as operators see it: kube-proxy's health and metrics endpoints, incremental syncs
//! after the first full one, and the periodic full sync repairing a table deleted by hand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kproxy_e2e::{Agent, Endpoint, EndpointSlice, Lab, Pod, Protocol, Service, ServicePort, root_or_skip};

/// `GET path` over HTTP/1.0 from the node namespace: (status code, body).
fn http_get(lab: &Lab, address: &str, path: &str) -> (u16, String) {
    let address: SocketAddr = address.parse().unwrap();
    let path = path.to_string();
    lab.run_in(lab.node_netns(), move || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: kproxy\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    })
}

/// A client pod, a pod serving TCP 8080, a Service `default/web` at `cluster_ip`:80 for it, and
/// the agent (with `extra` arguments) programming it; returns once the pod answers.
fn serving_one_pod(lab: &Lab, cluster_ip: &str, extra: &[&str]) -> (Pod, Pod, Service, Agent) {
    let client = lab.add_pod("client");
    let web = lab.add_pod("web1");
    web.serve_tcp(8080);
    let service = Service::cluster_ip("default", "web", cluster_ip).port(ServicePort::tcp("http", 80, 8080));
    lab.manifests().write(
        "web.yaml",
        &[&service, &EndpointSlice::for_service(&service).endpoint(Endpoint::ready(web.ip()))],
    );
    let agent = lab.start_kproxy_with(lab.manifests().path(), extra);
    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&web]);
    (client, web, service, agent)
}

#[test]
fn health_and_metrics_endpoints_should_answer_as_kube_proxys_do() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let (_client, _web, _service, _agent) = serving_one_pod(&lab, "10.96.0.80", &[]);

    for path in ["/healthz", "/livez"] {
        let (status, body) = lab.eventually(&format!("{path} answers"), || {
            std::panic::catch_unwind(|| http_get(&lab, "127.0.0.1:10256", path))
                .map_err(|_| "not listening yet".to_string())
        });
        assert_eq!(status, 200, "{path}: {body}");
        for field in ["\"lastUpdated\"", "\"currentTime\"", "\"nodeEligible\": true", "\"healthy\": true"] {
            assert!(body.contains(field), "{path} body lacks {field}: {body}");
        }
    }
    let (status, mode) = http_get(&lab, "127.0.0.1:10249", "/proxyMode");
    assert_eq!((status, mode.as_str()), (200, "nftables"));
    let (status, metrics) = http_get(&lab, "127.0.0.1:10249", "/metrics");
    assert_eq!(status, 200);
    for line in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count 1",
        "kubeproxy_proxy_healthz_total{code=\"200\"} 1",
        "kubeproxy_proxy_livez_total{code=\"200\"} 1",
        "kproxy_services 1",
        "kproxy_endpoints 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} missing from\n{metrics}");
    }
    assert!(metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds "), "{metrics}");
}

#[test]
fn changes_after_the_first_sync_should_be_programmed_incrementally() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let pods = lab.add_pods(&["pod1", "pod2"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.81").port(ServicePort::tcp("http", 80, 8080));
    let write = |pods: &[&kproxy_e2e::Pod]| {
        let slice =
            EndpointSlice::for_service(&service).endpoints(pods.iter().map(|p| Endpoint::ready(p.ip())));
        lab.manifests().write("web.yaml", &[&service, &slice]);
    };
    write(&[&pods[0]]);
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&pods[0]]);
    write(&[&pods[0], &pods[1]]);
    lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&pods[0], &pods[1]]);
    lab.manifests().write("web.yaml", &[]);
    lab.eventually("the deleted Service no longer answers", || {
        match lab.request(client.netns(), Protocol::Tcp, service.address("http"), Duration::from_secs(1)) {
            Err(kproxy_e2e::ClientError::Timeout) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let log = agent.log();
    let syncs: Vec<&str> = log.lines().filter(|l| l.contains("synced")).collect();
    assert!(syncs.len() >= 3, "{log}");
    assert!(
        syncs[0].contains("kind=\"full\"") || syncs[0].contains("kind=full"),
        "first sync is full: {}",
        syncs[0]
    );
    assert!(syncs[1..].iter().all(|l| l.contains("incremental")), "later syncs are incremental:\n{log}");
}

#[test]
fn periodic_full_sync_should_repair_a_table_deleted_by_hand() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let (client, web, service, _agent) = serving_one_pod(&lab, "10.96.0.82", &["--sync-period", "1s"]);
    lab.nft(&["delete", "table", "ip", "kproxy"]).expect_success();
    let took = lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&web]);
    eprintln!("the table was back and serving {took:?} after it was deleted");
}

#[test]
fn debug_diff_and_status_should_report_drift_between_the_plan_and_the_kernel() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let (_client, _web, _service, _agent) = serving_one_pod(&lab, "10.96.0.83", &["--sync-period", "1h"]);
    let dir = lab.manifests().path().display().to_string();
    let args = ["--manifests", dir.as_str(), "--hostname-override", kproxy_e2e::NODE_NAME];
    let diff = |lab: &Lab| lab.kproxy(&[&["debug", "diff"][..], &args[..]].concat());

    let clean = diff(&lab);
    assert!(clean.success(), "no drift right after a sync: {clean}");
    assert!(clean.stdout.contains("no drift"), "{clean}");

    lab.nft(&["delete", "element", "ip", "kproxy", "service-ips", "{ 10.96.0.83 . tcp . 80 }"])
        .expect_success();
    let drifted = diff(&lab);
    assert_eq!(drifted.status.code(), Some(1), "drift exits 1: {drifted}");
    assert!(drifted.stdout.contains("- service-ips: 10.96.0.83 . tcp . 80 : goto pick-tcp-1"), "{drifted}");

    let status = lab.kproxy(&[&["debug", "status"][..], &args[..]].concat()).expect_success();
    for line in
        ["services:       1 (1 ports, 1 endpoints)", "\"healthy\": true", "drift:          1 differences"]
    {
        assert!(status.contains(line), "{line:?} missing from\n{status}");
    }
}
