//! A stand-in for the Kubernetes API server: it answers the list requests of kproxy's watchers
//! (Services, EndpointSlices, Nodes) with fixed lists over plain HTTP on the loopback of a
//! namespace, and holds their watch requests open without sending events. A watch from an older
//! resource version gets `410 Expired`, as from a real API server after a restart, which makes
//! the watcher list again. That is enough for the agent's API source to start, list, program,
//! and follow a changed cluster across an API-server restart; `hack/bench` uses it to measure
//! the path objects take in a cluster (JSON through kube-rs reflectors) instead of YAML.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::netns::spawn_in;

/// The lists the fake API server answers with, as JSON objects, at one resource version.
#[derive(Clone, Debug, Default)]
pub struct ApiObjects {
    /// The resource version of every list (`"1"` when empty).
    pub resource_version: String,
    /// `v1` Services.
    pub services: Vec<Value>,
    /// `discovery.k8s.io/v1` EndpointSlices.
    pub endpoint_slices: Vec<Value>,
    /// `v1` Nodes.
    pub nodes: Vec<Value>,
}

/// A running fake API server; it stops when dropped.
pub struct FakeApi {
    address: String,
    stop: Arc<AtomicBool>,
}

/// The list bodies, by request path.
struct Lists {
    resource_version: String,
    services: Vec<u8>,
    endpoint_slices: Vec<u8>,
    nodes: Vec<u8>,
}

impl FakeApi {
    /// Serves `objects` on an ephemeral port of 127.0.0.1 inside network namespace `netns`.
    ///
    /// # Panics
    /// If the listener cannot be bound there.
    pub fn start(netns: &str, objects: &ApiObjects) -> FakeApi {
        FakeApi::start_on(netns, 0, objects)
    }

    /// Like [`FakeApi::start`], on `port` (0: any): a server started again on the port of one
    /// that stopped is the same API server, restarted.
    ///
    /// # Panics
    /// If the listener cannot be bound there.
    pub fn start_on(netns: &str, port: u16, objects: &ApiObjects) -> FakeApi {
        let resource_version = if objects.resource_version.is_empty() {
            "1".to_string()
        } else {
            objects.resource_version.clone()
        };
        let list = |kind: &str, api_version: &str, items: &[Value]| {
            let list = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"resourceVersion": resource_version},
                "items": items,
            });
            serde_json::to_vec(&list).expect("a JSON value serializes")
        };
        let lists = Arc::new(Lists {
            resource_version: resource_version.clone(),
            services: list("ServiceList", "v1", &objects.services),
            endpoint_slices: list("EndpointSliceList", "discovery.k8s.io/v1", &objects.endpoint_slices),
            nodes: list("NodeList", "v1", &objects.nodes),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (bound, address) = std::sync::mpsc::channel();
        let serving = Arc::clone(&stop);
        spawn_in(netns, move || {
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake API server");
            listener.set_nonblocking(true).expect("a non-blocking listener");
            let _ = bound.send(listener.local_addr().expect("a bound address").to_string());
            while !serving.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (lists, stop) = (Arc::clone(&lists), Arc::clone(&serving));
                        thread::spawn(move || serve_connection(stream, &lists, &stop));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let address = address.recv().expect("the fake API server starts");
        FakeApi { address, stop }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// Writes a kubeconfig that points at this server into `dir`, and returns its path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("fake-api.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n",
            self.address
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers the requests of one connection (HTTP/1.1 keep-alive) until it closes, a watch
/// holds it, or the server stops.
fn serve_connection(stream: TcpStream, lists: &Lists, stop: &AtomicBool) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // Headers, up to the empty line; GET requests have no body.
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let body = match path {
            "/api/v1/services" => &lists.services,
            "/apis/discovery.k8s.io/v1/endpointslices" => &lists.endpoint_slices,
            "/api/v1/nodes" => &lists.nodes,
            _ => {
                let _ = writer.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                continue;
            }
        };
        if query.split('&').any(|p| p == "watch=true" || p == "watch=1") {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
            let from = query.split('&').find_map(|p| p.strip_prefix("resourceVersion="));
            if from.is_some_and(|from| from != lists.resource_version) {
                let expired = json!({"type": "ERROR", "object": {
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "message": "too old resource version", "reason": "Expired", "code": 410,
                }});
                let event = format!("{expired}\n");
                let _ = write!(writer, "{:x}\r\n{event}\r\n0\r\n\r\n", event.len());
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(body)).is_err() {
            return;
        }
    }
}
