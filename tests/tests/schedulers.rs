//! The schedulers on real traffic: round-robin is exact, source hashing and Maglev send a
//! client where `kproxy debug explain` says the kernel will (so the planner's hash is the
//! kernel's), and Maglev keeps the clients of the endpoints that stay when one is removed.

use std::collections::BTreeMap;
use std::time::Duration;

use kproxy_e2e::{Endpoint, EndpointSlice, Lab, Manifest, Pod, Protocol, Service, ServicePort, root_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

/// A Service with the `kproxy.io/scheduler` annotation.
struct Scheduled<'a>(&'a Service, &'a str);

impl Manifest for Scheduled<'_> {
    fn to_yaml(&self) -> String {
        self.0.to_yaml().replacen(
            "metadata:\n",
            &format!("metadata:\n  annotations:\n    kproxy.io/scheduler: {}\n", self.1),
            1,
        )
    }
}

fn write(lab: &Lab, service: &Service, scheduler: &str, endpoints: &[&Pod]) {
    let slice =
        EndpointSlice::for_service(service).endpoints(endpoints.iter().map(|p| Endpoint::ready(p.ip())));
    lab.manifests().write("svc.yaml", &[&Scheduled(service, scheduler), &slice]);
}

/// What `kproxy debug explain` predicts for a client: the endpoint's address.
fn predicted(lab: &Lab, address: std::net::SocketAddr, client: &Pod) -> String {
    let out = lab
        .kproxy(&[
            "debug",
            "explain",
            &format!("{address}/tcp"),
            "--from",
            &client.ip().to_string(),
            "--manifests",
            &lab.manifests().path().display().to_string(),
            "--hostname-override",
            "node1",
            "--output",
            "json",
        ])
        .expect_success();
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let endpoints = value["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "a hash names one endpoint: {out}");
    endpoints[0]["endpoint"].as_str().unwrap().rsplit_once(':').unwrap().0.to_string()
}

#[test]
fn round_robin_should_give_each_of_three_endpoints_exactly_a_third_of_new_connections() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let pods = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.90").port(ServicePort::tcp("http", 80, 8080));
    write(&lab, &service, "rr", &pods.iter().collect::<Vec<_>>());
    let _agent = lab.start_kproxy(lab.manifests().path());
    let address = service.address("http");
    lab.wait_for_answers(client.netns(), Protocol::Tcp, address, &pods);
    // Align on a full rotation: the probes above used the counter too.
    let tally = lab.tally(client.netns(), Protocol::Tcp, address, 300, TIMEOUT);
    eprintln!("rr: {tally}");
    assert_eq!(tally.failures(), 0, "{tally}");
    for pod in &pods {
        assert_eq!(tally.count(pod.name()), 100, "exactly 100 each: {tally}");
    }
}

#[test]
fn source_hash_should_send_each_client_to_the_endpoint_explain_predicts_every_time() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let clients = lab.add_pods(&["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]);
    let pods = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.91").port(ServicePort::tcp("http", 80, 8080));
    write(&lab, &service, "sh", &pods.iter().collect::<Vec<_>>());
    let agent = lab.start_kproxy(lab.manifests().path());
    let address = service.address("http");
    lab.eventually("the service answers", || {
        lab.request(clients[0].netns(), Protocol::Tcp, address, TIMEOUT).map_err(|e| e.to_string())
    });
    let mut landed = BTreeMap::new();
    for client in &clients {
        let expected = predicted(&lab, address, client);
        let tally = lab.tally(client.netns(), Protocol::Tcp, address, 20, TIMEOUT);
        let answered: Vec<&str> = tally.pods();
        assert_eq!(answered.len(), 1, "one client, one endpoint: {tally}");
        let pod = pods.iter().find(|p| p.name() == answered[0]).unwrap();
        assert_eq!(
            pod.ip().to_string(),
            expected,
            "{}: explain predicted {expected}: {tally}",
            client.name()
        );
        landed.insert(client.name().to_string(), pod.name().to_string());
    }
    eprintln!("sh: {landed:?}");
    // Across an agent restart the same clients land on the same endpoints.
    agent.restart();
    lab.eventually("the agent is back", || {
        lab.request(clients[0].netns(), Protocol::Tcp, address, TIMEOUT).map_err(|e| e.to_string())
    });
    for client in &clients {
        let tally = lab.tally(client.netns(), Protocol::Tcp, address, 5, TIMEOUT);
        assert_eq!(tally.pods(), vec![landed[client.name()].as_str()], "{}: {tally}", client.name());
    }
}

#[test]
fn maglev_should_keep_the_clients_of_the_remaining_endpoints_when_one_is_removed() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let clients = lab.add_pods(&["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10"]);
    let pods = lab.add_pods(&["pod1", "pod2", "pod3", "pod4"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    let service =
        Service::cluster_ip("default", "web", "10.96.0.92").port(ServicePort::tcp("http", 80, 8080));
    write(&lab, &service, "maglev", &pods.iter().collect::<Vec<_>>());
    let _agent = lab.start_kproxy(lab.manifests().path());
    let address = service.address("http");
    lab.eventually("the service answers", || {
        lab.request(clients[0].netns(), Protocol::Tcp, address, TIMEOUT).map_err(|e| e.to_string())
    });
    let land = |client: &Pod| -> String {
        let tally = lab.tally(client.netns(), Protocol::Tcp, address, 3, TIMEOUT);
        assert_eq!(tally.pods().len(), 1, "{tally}");
        tally.pods()[0].to_string()
    };
    let before: Vec<String> = clients.iter().map(&land).collect();
    for (client, pod) in clients.iter().zip(&before) {
        let ip = pods.iter().find(|p| p.name() == pod).unwrap().ip().to_string();
        assert_eq!(predicted(&lab, address, client), ip, "{}", client.name());
    }
    let removed = before[0].clone();
    let remaining: Vec<&Pod> = pods.iter().filter(|p| p.name() != removed).collect();
    write(&lab, &service, "maglev", &remaining);
    // One request per probe: a tally taken across the switch would see both endpoints.
    lab.eventually("the removed endpoint is out", || {
        match lab.request(clients[0].netns(), Protocol::Tcp, address, TIMEOUT) {
            Ok(reply) if reply.pod != removed => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let after: Vec<String> = clients.iter().map(&land).collect();
    let stayed = before.iter().zip(&after).filter(|(b, _)| **b != removed).filter(|(b, a)| b == a).count();
    let others = before.iter().filter(|b| **b != removed).count();
    eprintln!(
        "maglev: before {before:?}, after removing {removed}: {after:?}; {stayed} of {others} others kept their endpoint"
    );
    assert_eq!(stayed, others, "Maglev keeps the other clients where they were");
}

#[test]
fn source_hash_should_spread_many_clients_over_the_endpoints_through_a_node_port() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let pods = lab.add_pods(&["pod1", "pod2", "pod3"]);
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    lab.manifests().write("node.yaml", &[&kproxy_e2e::Node::lab_node()]);
    let service = Service::node_port("default", "web", "10.96.0.93")
        .port(ServicePort::tcp("http", 80, 8080).node_port(30093));
    write(&lab, &service, "sh", &pods.iter().collect::<Vec<_>>());
    let _agent = lab.start_kproxy(lab.manifests().path());
    let address = service.node_port_on(kproxy_e2e::NODE_UPLINK_IP, "http");
    lab.eventually("the node port answers", || {
        lab.request(ext.netns(), Protocol::Tcp, address, TIMEOUT).map_err(|e| e.to_string())
    });
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    let sources = ext.extra_ips();
    for source in &sources {
        let tally = lab.tally(ext.from(*source), Protocol::Tcp, address, 4, TIMEOUT);
        assert_eq!(tally.failures(), 0, "{source}: {tally}");
        assert_eq!(tally.pods().len(), 1, "one client address, one endpoint: {source}: {tally}");
        *per_pod.entry(tally.pods()[0].to_string()).or_default() += 1;
    }
    eprintln!("sh over {} client addresses: {per_pod:?}", sources.len());
    assert_eq!(per_pod.len(), 3, "every endpoint gets clients: {per_pod:?}");
    assert!(
        per_pod.values().all(|n| *n * 5 <= sources.len() * 3),
        "no endpoint takes more than 60%: {per_pod:?}"
    );
}
