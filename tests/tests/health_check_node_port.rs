//! kube-proxy's HealthCheckNodePort servers: for a LoadBalancer Service with
//! `externalTrafficPolicy: Local`, an HTTP server on `healthCheckNodePort` that answers 200 while
//! the node has local ready endpoints and 503 otherwise (also when only terminating ones are
//! left), started and stopped as Services come and go, and never fatal when its port is taken.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use kproxy_e2e::{Lab, Manifest, NODE_NAME, root_or_skip};

/// The node that is not the agent's: its endpoints never count.
const OTHER_NODE: &str = "node2";

/// A `type: LoadBalancer`, `externalTrafficPolicy: Local` Service `default/<name>` with one TCP
/// port and a health-check node port. The test renders its own YAML so that it depends on
/// nothing but the manifests directory.
struct LoadBalancer {
    name: &'static str,
    cluster_ip: Ipv4Addr,
    health_check_node_port: u16,
}

impl LoadBalancer {
    fn new(name: &'static str, cluster_ip: [u8; 4], health_check_node_port: u16) -> Self {
        Self { name, cluster_ip: cluster_ip.into(), health_check_node_port }
    }

    /// The Service's EndpointSlice with `endpoints`.
    fn slice(&self, endpoints: impl IntoIterator<Item = Endpoint>) -> Slice<'_> {
        Slice { service: self, endpoints: endpoints.into_iter().collect() }
    }
}

impl Manifest for LoadBalancer {
    fn to_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"{name}\"\n  namespace: \"default\"\n\
             spec:\n  type: LoadBalancer\n  clusterIP: \"{ip}\"\n  clusterIPs: [\"{ip}\"]\n  \
             ipFamilies: [\"IPv4\"]\n  externalTrafficPolicy: Local\n  healthCheckNodePort: {port}\n  \
             ports:\n  - name: \"http\"\n    port: 80\n    protocol: TCP\n    targetPort: 8080\n",
            name = self.name,
            ip = self.cluster_ip,
            port = self.health_check_node_port,
        )
    }
}

/// An endpoint's conditions, as the EndpointSlice controller sets them.
#[derive(Clone, Copy, Debug)]
enum Condition {
    Ready,
    NotReady,
    ServingTerminating,
    TerminatingNotServing,
}

/// One endpoint: a (pod-less) address, its conditions and its node.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    host: u8,
    condition: Condition,
    node: &'static str,
}

/// An endpoint `10.244.0.<host>` on the agent's node.
fn local(host: u8, condition: Condition) -> Endpoint {
    Endpoint { host, condition, node: NODE_NAME }
}

/// An endpoint `10.244.1.<host>` on another node.
fn remote(host: u8, condition: Condition) -> Endpoint {
    Endpoint { host, condition, node: OTHER_NODE }
}

/// The Service's EndpointSlice, `<service>-1`.
struct Slice<'a> {
    service: &'a LoadBalancer,
    endpoints: Vec<Endpoint>,
}

impl Manifest for Slice<'_> {
    fn to_yaml(&self) -> String {
        let mut yaml = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: \"{name}-1\"\n  \
             namespace: \"default\"\n  labels:\n    kubernetes.io/service-name: \"{name}\"\n\
             addressType: IPv4\nports:\n- name: \"http\"\n  port: 8080\n  protocol: TCP\n",
            name = self.service.name
        );
        yaml.push_str(if self.endpoints.is_empty() { "endpoints: []\n" } else { "endpoints:\n" });
        for endpoint in &self.endpoints {
            let (ready, serving, terminating) = match endpoint.condition {
                Condition::Ready => (true, true, false),
                Condition::NotReady => (false, false, false),
                Condition::ServingTerminating => (false, true, true),
                Condition::TerminatingNotServing => (false, false, true),
            };
            let subnet = if endpoint.node == NODE_NAME { 0 } else { 1 };
            let _ = write!(
                yaml,
                "- addresses: [\"10.244.{subnet}.{}\"]\n  conditions: {{ready: {ready}, serving: {serving}, \
                 terminating: {terminating}}}\n  nodeName: \"{}\"\n",
                endpoint.host, endpoint.node
            );
        }
        yaml
    }
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    weight: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `GET path` over HTTP/1.0 to `127.0.0.1:port` from the node namespace; `Err` when the
/// connection fails (with its kind) or the answer cannot be read.
fn http_get(lab: &Lab, port: u16, path: &str) -> Result<Answer, (Option<ErrorKind>, String)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    lab.run_in(lab.node_netns(), || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
            .map_err(|e| (Some(e.kind()), format!("connect {address}: {e}")))?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| (None, e.to_string()))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: kproxy\r\n\r\n").map_err(|e| (None, e.to_string()))?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| (None, format!("read {address}: {e}")))?;
        let (head, body) =
            response.split_once("\r\n\r\n").ok_or((None, format!("no header end: {response:?}")))?;
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or((None, format!("no status line: {response:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        Ok(Answer {
            status,
            weight: header("x-load-balancing-endpoint-weight"),
            content_type: header("content-type"),
            body: body.to_owned(),
        })
    })
}

/// Waits until `port` answers with `status` and `localEndpoints` = `local_endpoints`.
#[track_caller]
fn wait_for_answer(lab: &Lab, port: u16, status: u16, local_endpoints: u64) -> Answer {
    lab.eventually(&format!(":{port} answers {status} with {local_endpoints} local endpoints"), || {
        let answer = http_get(lab, port, "/").map_err(|(_, e)| e)?;
        if answer.status == status && answer.json()["localEndpoints"] == local_endpoints {
            Ok(answer)
        } else {
            Err(format!("{answer:?}"))
        }
    })
}

/// Waits until nothing listens on `port` in the node namespace.
#[track_caller]
fn wait_for_nothing_listening(lab: &Lab, port: u16) {
    lab.eventually(&format!("nothing listens on :{port}"), || match http_get(lab, port, "/") {
        Err((Some(ErrorKind::ConnectionRefused), _)) => Ok(()),
        Err((_, e)) => Err(e),
        Ok(answer) => Err(format!("still answering: {answer:?}")),
    });
}

use Condition::{NotReady, Ready, ServingTerminating, TerminatingNotServing};

#[test]
fn health_check_node_port_should_report_local_ready_endpoints_only() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let lb = LoadBalancer::new("lb", [10, 96, 0, 90], 32000);
    let write = |local_conditions: [Condition; 3]| {
        let endpoints = (11..)
            .zip(local_conditions)
            .map(|(host, condition)| local(host, condition))
            .chain([remote(21, Ready), remote(22, Ready)]);
        lab.manifests().write("lb.yaml", &[&lb, &lb.slice(endpoints)]);
    };
    write([Ready, Ready, NotReady]);
    let agent = lab.start_kproxy(lab.manifests().path());

    let answer = wait_for_answer(&lab, 32000, 200, 2);
    assert_eq!(answer.weight.as_deref(), Some("2"), "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some("application/json"), "{answer:?}");
    assert_eq!(
        answer.json(),
        serde_json::json!({
            "service": {"namespace": "default", "name": "lb"},
            "localEndpoints": 2,
            "serviceProxyHealthy": true
        })
    );
    let other_path = http_get(&lab, 32000, "/any/path?at=all").expect("any path answers");
    assert_eq!((other_path.status, other_path.weight.as_deref()), (200, Some("2")), "{other_path:?}");

    // Upstream e2e: "should fail health check node port if there are only terminating endpoints".
    write([ServingTerminating, ServingTerminating, TerminatingNotServing]);
    let answer = wait_for_answer(&lab, 32000, 503, 0);
    assert_eq!(answer.weight.as_deref(), Some("0"), "only terminating local endpoints: {answer:?}");
    assert_eq!(answer.json()["serviceProxyHealthy"], true, "{answer:?}");

    write([Ready, ServingTerminating, NotReady]);
    let answer = wait_for_answer(&lab, 32000, 200, 1);
    assert_eq!(answer.weight.as_deref(), Some("1"), "{answer:?}");

    write([NotReady, NotReady, NotReady]);
    let answer = wait_for_answer(&lab, 32000, 503, 0);
    assert_eq!(answer.weight.as_deref(), Some("0"), "no ready local endpoint: {answer:?}");
    assert!(agent.is_running());
}

#[test]
fn health_check_node_port_should_start_and_stop_with_its_service() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let first = LoadBalancer::new("first", [10, 96, 0, 91], 32000);
    let second = LoadBalancer::new("second", [10, 96, 0, 92], 32001);
    lab.manifests().write("first.yaml", &[&first, &first.slice([local(11, Ready), remote(21, Ready)])]);
    let _agent = lab.start_kproxy(lab.manifests().path());
    wait_for_answer(&lab, 32000, 200, 1);
    wait_for_nothing_listening(&lab, 32001);

    lab.manifests().write("second.yaml", &[&second, &second.slice([local(12, Ready), local(13, Ready)])]);
    let answer = wait_for_answer(&lab, 32001, 200, 2);
    assert_eq!(answer.json()["service"]["name"], "second", "{answer:?}");

    lab.manifests().remove("second.yaml");
    wait_for_nothing_listening(&lab, 32001);
    let answer = wait_for_answer(&lab, 32000, 200, 1);
    assert_eq!(answer.json()["service"]["name"], "first", "{answer:?}");

    // The Service moves to another port: the old one is released, the new one served.
    let moved = LoadBalancer::new("first", [10, 96, 0, 91], 32003);
    lab.manifests().write("first.yaml", &[&moved, &moved.slice([local(11, Ready)])]);
    wait_for_answer(&lab, 32003, 200, 1);
    wait_for_nothing_listening(&lab, 32000);
}

#[test]
fn health_check_node_port_should_log_a_port_taken_and_keep_serving_the_others() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let blocker =
        lab.run_in(lab.node_netns(), || TcpListener::bind(("0.0.0.0", 32002)).expect("bind :32002"));
    let free = LoadBalancer::new("free", [10, 96, 0, 93], 32000);
    let taken = LoadBalancer::new("taken", [10, 96, 0, 94], 32002);
    lab.manifests().write("free.yaml", &[&free, &free.slice([local(11, Ready)])]);
    lab.manifests().write("taken.yaml", &[&taken, &taken.slice([local(12, Ready)])]);
    let agent = lab.start_kproxy(lab.manifests().path());

    wait_for_answer(&lab, 32000, 200, 1);
    let error = lab.eventually("the agent logs the port it cannot bind", || {
        agent
            .log()
            .lines()
            .find(|line| line.contains("ERROR") && line.contains("32002"))
            .map(str::to_owned)
            .ok_or_else(|| "no error logged yet".to_string())
    });
    assert!(error.contains("default/taken"), "the error names the Service: {error}");
    assert!(agent.is_running(), "a taken port is not fatal; log:\n{}", agent.log());
    wait_for_answer(&lab, 32000, 200, 1);

    // Once the port is free the agent binds it on a later try.
    drop(blocker);
    let answer = wait_for_answer(&lab, 32002, 200, 1);
    assert_eq!(answer.json()["service"]["name"], "taken", "{answer:?}");
    let log = agent.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains("ERROR") && l.contains("32002")).count(),
        1,
        "logged once:\n{log}"
    );
}
