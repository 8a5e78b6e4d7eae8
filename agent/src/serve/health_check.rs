//! kube-proxy's HealthCheckNodePort servers (`pkg/proxy/healthcheck/service_health.go`).
//!
//! A LoadBalancer Service with `externalTrafficPolicy: Local` has a `healthCheckNodePort`: the
//! cloud load balancer probes it on every node to learn which nodes have endpoints of the
//! Service, and sends traffic only to those. For every such Service this module runs one HTTP
//! server on that port, bound on each node-port address (on all addresses when there are none),
//! answering any path:
//!
//! * `200` when the Service has at least one *local ready* endpoint (on this node, ready; counted
//!   as distinct addresses across the Service's ports) and the proxy is healthy, else `503`.
//!   Terminating endpoints do not count, so the check fails while the last local pods drain;
//! * the header `X-Load-Balancing-Endpoint-Weight: <local ready endpoints>`;
//! * the body `{"service":{"namespace":…,"name":…},"localEndpoints":n,"serviceProxyHealthy":b}`.
//!
//! The servers follow the sync loop's outcomes ([`follow`]): started when a Service appears,
//! stopped when it goes or moves to another port, their counts updated in place. A port that
//! cannot be bound is logged as an error and tried again at the next outcome (and every
//! [`RETRY_DELAY`] meanwhile); it never stops the agent.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use kproxy_rules::NodeContext;
use kproxy_rules::model::{ServiceName, ServicePortEndpoints};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use super::Status;
use crate::sync::{OutcomeReceiver, SyncOutcome};

/// The header load balancers may read as this node's weight for the Service.
pub const WEIGHT_HEADER: HeaderName = HeaderName::from_static("x-load-balancing-endpoint-weight");

/// How often ports that could not be bound are tried again while no new outcome arrives.
pub const RETRY_DELAY: Duration = Duration::from_secs(5);

/// How long stopping a server waits for its sockets to be closed.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Follows the sync outcomes until their sender is gone, keeping one server per health-check
/// node port.
pub async fn follow(mut outcomes: OutcomeReceiver, status: Arc<Status>) {
    let mut servers = HealthCheckServers::new(status);
    loop {
        let outcome = outcomes.borrow_and_update().clone();
        if let Some(outcome) = outcome {
            servers.sync(&outcome).await;
        }
        let retry = servers.retry_pending();
        tokio::select! {
            changed = outcomes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(RETRY_DELAY), if retry => {}
        }
    }
}

// === what an outcome asks for ===

/// A health-check server an outcome asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedServer {
    /// The Service it reports on.
    pub service: ServiceName,
    /// The Service's local ready endpoints: distinct addresses across its ports.
    pub local_endpoints: usize,
}

/// A health-check node port two Services claim; the first by name keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortClaimedTwice {
    /// The port.
    pub port: u16,
    /// The Service served on it.
    pub kept: ServiceName,
    /// The Service left without a server.
    pub refused: ServiceName,
}

/// The servers an outcome asks for, by port, and the claims that could not be honoured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantedServers {
    /// One server per health-check node port.
    pub servers: BTreeMap<u16, WantedServer>,
    /// Ports claimed by more than one Service.
    pub conflicts: Vec<PortClaimedTwice>,
}

/// The health-check servers `ports` ask for on `node`: one per Service with a health-check
/// node port, with its count of local ready endpoints.
pub fn wanted_servers(ports: &[ServicePortEndpoints], node: &NodeContext) -> WantedServers {
    let mut services: BTreeMap<&ServiceName, (u16, BTreeSet<IpAddr>)> = BTreeMap::new();
    for entry in ports {
        let Some(port) = entry.port.service.health_check_node_port else { continue };
        let (_, addresses) =
            services.entry(&entry.port.name.service).or_insert_with(|| (port, BTreeSet::new()));
        addresses.extend(local_ready_addresses(entry, node));
    }
    let mut wanted = WantedServers::default();
    for (service, (port, addresses)) in services {
        match wanted.servers.get(&port) {
            Some(kept) => wanted.conflicts.push(PortClaimedTwice {
                port,
                kept: kept.service.clone(),
                refused: service.clone(),
            }),
            None => {
                wanted.servers.insert(
                    port,
                    WantedServer { service: service.clone(), local_endpoints: addresses.len() },
                );
            }
        }
    }
    wanted
}

/// The addresses of `entry`'s endpoints that run on `node` and are ready.
fn local_ready_addresses<'a>(
    entry: &'a ServicePortEndpoints,
    node: &'a NodeContext,
) -> impl Iterator<Item = IpAddr> + 'a {
    entry
        .endpoints
        .iter()
        .filter(|e| e.conditions.ready && e.node_name.as_deref() == Some(node.node_name.as_str()))
        .map(|e| e.address)
}

// === the answer ===

/// kube-proxy's answer for `service` with `local_endpoints` local ready endpoints.
pub fn health_response(service: &ServiceName, local_endpoints: usize, proxy_healthy: bool) -> Response {
    let code =
        if local_endpoints > 0 && proxy_healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let json_string = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let body = format!(
        "{{\"service\":{{\"namespace\":{},\"name\":{}}},\"localEndpoints\":{local_endpoints},\
         \"serviceProxyHealthy\":{proxy_healthy}}}",
        json_string(&service.namespace),
        json_string(&service.name),
    );
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (WEIGHT_HEADER, HeaderValue::from(local_endpoints)),
    ];
    (code, headers, body).into_response()
}

/// What one server's handler reads: whom it reports on, the count kept up to date by the
/// follower, and the proxy's health.
struct ServerState {
    service: ServiceName,
    local_endpoints: AtomicUsize,
    status: Arc<Status>,
}

async fn answer(State(state): State<Arc<ServerState>>) -> Response {
    let healthy = state.status.health.report(Timestamp::now()).healthy;
    health_response(&state.service, state.local_endpoints.load(Ordering::Relaxed), healthy)
}

// === the servers ===

/// The running servers, by port, and the problems last logged.
pub struct HealthCheckServers {
    status: Arc<Status>,
    running: BTreeMap<u16, RunningServer>,
    /// The problems logged at the last sync, so that a lasting one is logged once.
    logged: BTreeSet<String>,
    /// Some wanted port could not be bound.
    retry: bool,
}

/// One Service's server: a serving task per bound address.
struct RunningServer {
    state: Arc<ServerState>,
    /// The node-port addresses it was bound for.
    node_port_ips: Vec<IpAddr>,
    /// Dropped to stop the tasks.
    stop: watch::Sender<()>,
    /// Resolves once the task's listening socket is closed.
    released: Vec<(SocketAddr, oneshot::Receiver<()>)>,
}

impl HealthCheckServers {
    /// No servers yet.
    pub fn new(status: Arc<Status>) -> HealthCheckServers {
        HealthCheckServers { status, running: BTreeMap::new(), logged: BTreeSet::new(), retry: false }
    }

    /// Whether a wanted port could not be bound at the last sync.
    pub fn retry_pending(&self) -> bool {
        self.retry
    }

    /// Makes the running servers those `outcome` asks for: stops the ones no longer wanted (or
    /// wanted for another Service or other addresses), updates the counts of the others, and
    /// starts the missing ones.
    pub async fn sync(&mut self, outcome: &SyncOutcome) {
        let wanted = wanted_servers(&outcome.ports, &outcome.node);
        let node_port_ips = &outcome.node.node_port_ips;
        let mut problems = BTreeSet::new();
        for conflict in &wanted.conflicts {
            let problem = format!(
                "health-check node port {} of Service {} is already the one of Service {}; not serving it",
                conflict.port, conflict.refused, conflict.kept
            );
            if !self.logged.contains(&problem) {
                tracing::warn!(service = %conflict.refused, port = conflict.port, "{problem}");
            }
            problems.insert(problem);
        }

        let stale: Vec<u16> = self
            .running
            .iter()
            .filter(|(port, server)| {
                !keeps(&server.state.service, &server.node_port_ips, wanted.servers.get(port), node_port_ips)
            })
            .map(|(port, _)| *port)
            .collect();
        for port in stale {
            if let Some(server) = self.running.remove(&port) {
                tracing::info!(service = %server.state.service, port, "stopping the health-check node port server");
                server.stop().await;
            }
        }

        self.retry = false;
        for (port, want) in wanted.servers {
            if let Some(server) = self.running.get(&port) {
                server.state.local_endpoints.store(want.local_endpoints, Ordering::Relaxed);
                continue;
            }
            let state = Arc::new(ServerState {
                service: want.service.clone(),
                local_endpoints: AtomicUsize::new(want.local_endpoints),
                status: Arc::clone(&self.status),
            });
            match RunningServer::start(port, node_port_ips, state).await {
                Ok(server) => {
                    let addresses: Vec<String> = server.released.iter().map(|(a, _)| a.to_string()).collect();
                    tracing::info!(
                        service = %want.service,
                        port,
                        addresses = addresses.join(","),
                        local_endpoints = want.local_endpoints,
                        "serving the health-check node port"
                    );
                    self.running.insert(port, server);
                }
                Err((address, error)) => {
                    self.retry = true;
                    let problem = format!(
                        "cannot serve health-check node port {port} of Service {} on {address}: {error}; \
                         will retry",
                        want.service
                    );
                    if !self.logged.contains(&problem) {
                        tracing::error!(service = %want.service, port, "{problem}");
                    }
                    problems.insert(problem);
                }
            }
        }
        self.logged = problems;
    }
}

/// Whether a server running for `service` on `ips` still answers what is `wanted` on its port.
fn keeps(
    service: &ServiceName,
    ips: &[IpAddr],
    wanted: Option<&WantedServer>,
    wanted_ips: &[IpAddr],
) -> bool {
    wanted.is_some_and(|w| &w.service == service) && ips == wanted_ips
}

impl RunningServer {
    /// Binds `port` on every address of `node_port_ips` (all addresses when empty) and serves
    /// `state` there; the first address that cannot be bound fails the whole server, and the
    /// sockets already bound are closed again.
    async fn start(
        port: u16,
        node_port_ips: &[IpAddr],
        state: Arc<ServerState>,
    ) -> Result<RunningServer, (SocketAddr, io::Error)> {
        let listeners = bind(port, node_port_ips).await?;
        let (stop, _) = watch::channel(());
        let mut released = Vec::new();
        for listener in listeners {
            let address = listener
                .local_addr()
                .map_err(|e| (SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), e))?;
            released.push((address, serve(listener, Arc::clone(&state), stop.subscribe())));
        }
        Ok(RunningServer { state, node_port_ips: node_port_ips.to_vec(), stop, released })
    }

    /// Stops the serving tasks and waits until their sockets are closed, so that the port can
    /// be bound again at once.
    async fn stop(self) {
        drop(self.stop);
        for (address, released) in self.released {
            if tokio::time::timeout(RELEASE_TIMEOUT, released).await.is_err() {
                tracing::warn!(%address, "the health-check node port server did not close its socket in time");
            }
        }
    }
}

/// Binds `port` on each of `node_port_ips`, or on all addresses when there are none: `[::]`,
/// which also serves IPv4 unless `net.ipv6.bindv6only` is set (then `0.0.0.0` as well), or
/// `0.0.0.0` alone on a node without IPv6.
async fn bind(port: u16, node_port_ips: &[IpAddr]) -> Result<Vec<TcpListener>, (SocketAddr, io::Error)> {
    let bind_one = |ip: IpAddr| async move {
        let address = SocketAddr::new(ip, port);
        TcpListener::bind(address).await.map_err(|e| (address, e))
    };
    if !node_port_ips.is_empty() {
        let mut listeners = Vec::with_capacity(node_port_ips.len());
        for ip in node_port_ips {
            listeners.push(bind_one(*ip).await?);
        }
        return Ok(listeners);
    }
    match bind_one(Ipv6Addr::UNSPECIFIED.into()).await {
        Ok(any_v6) if ipv6_sockets_are_dual_stack() => Ok(vec![any_v6]),
        Ok(any_v6) => Ok(vec![any_v6, bind_one(Ipv4Addr::UNSPECIFIED.into()).await?]),
        Err((address, e)) if e.kind() == io::ErrorKind::AddrInUse => Err((address, e)),
        Err(_) => Ok(vec![bind_one(Ipv4Addr::UNSPECIFIED.into()).await?]),
    }
}

/// Whether a new IPv6 socket also accepts IPv4 (`net.ipv6.bindv6only = 0`, Linux's default).
fn ipv6_sockets_are_dual_stack() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").map_or(true, |value| value.trim() == "0")
}

/// Serves `state` on `listener` until `stop`'s sender is dropped; the returned receiver
/// resolves once the listening socket is closed.
fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    mut stop: watch::Receiver<()>,
) -> oneshot::Receiver<()> {
    let (released_sender, released) = oneshot::channel();
    let address = listener.local_addr().ok();
    let listener = ReleasingListener { listener, _released: released_sender };
    let routes = Router::new().fallback(answer).with_state(state);
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, routes).with_graceful_shutdown(shutdown).await {
            tracing::error!(?address, "health-check node port server failed: {e}");
        }
    });
    released
}

/// A listener that says when it is closed: its sender is dropped right after the socket.
struct ReleasingListener {
    listener: TcpListener,
    _released: oneshot::Sender<()>,
}

impl axum::serve::Listener for ReleasingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        axum::serve::Listener::accept(&mut self.listener)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use kproxy_rules::model::{
        Conditions, Endpoint, Hints, Protocol, ServiceInfo, ServicePort, ServicePortName, TrafficPolicy,
    };

    use crate::serve::health::Health;
    use crate::serve::metrics::Metrics;

    fn name(name: &str) -> ServiceName {
        ServiceName { namespace: "shop".into(), name: name.into() }
    }

    fn endpoint(address: &str, port: u16, node: &str, conditions: Conditions) -> Endpoint {
        Endpoint {
            address: address.parse().unwrap(),
            port,
            conditions,
            node_name: Some(node.into()),
            zone: None,
            hints: Hints::default(),
        }
    }

    fn ready(address: &str, port: u16, node: &str) -> Endpoint {
        endpoint(address, port, node, Conditions::READY)
    }

    fn port(
        service: &str,
        port_name: &str,
        health_check_node_port: Option<u16>,
        endpoints: Vec<Endpoint>,
    ) -> ServicePortEndpoints {
        let info = ServiceInfo {
            external_policy: TrafficPolicy::Local,
            health_check_node_port,
            ..ServiceInfo::default()
        };
        ServicePortEndpoints {
            port: ServicePort {
                name: ServicePortName {
                    service: name(service),
                    port: port_name.into(),
                    protocol: Protocol::Tcp,
                },
                port: 80,
                node_port: Some(30080),
                service: Arc::new(info),
            },
            endpoints,
        }
    }

    fn node1() -> NodeContext {
        NodeContext::new("node1")
    }

    fn status() -> Arc<Status> {
        Arc::new(Status { health: Health::new(Duration::from_secs(60)), metrics: Metrics::new() })
    }

    async fn parts(response: Response) -> (u16, Option<String>, Option<String>, serde_json::Value) {
        let code = response.status().as_u16();
        let header =
            |name: &HeaderName| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let weight = header(&WEIGHT_HEADER);
        let content_type = header(&header::CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (code, weight, content_type, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn wanted_servers_should_count_distinct_local_ready_addresses_across_the_service_ports() {
        let ports = [
            port(
                "web",
                "http",
                Some(32000),
                vec![
                    ready("10.244.0.11", 8080, "node1"),
                    ready("10.244.0.12", 8080, "node1"),
                    ready("10.244.1.11", 8080, "node2"),
                ],
            ),
            port(
                "web",
                "https",
                Some(32000),
                vec![ready("10.244.0.11", 8443, "node1"), ready("10.244.0.13", 8443, "node1")],
            ),
        ];
        let wanted = wanted_servers(&ports, &node1());
        assert_eq!(
            wanted.servers,
            BTreeMap::from([(32000, WantedServer { service: name("web"), local_endpoints: 3 })])
        );
        assert!(wanted.conflicts.is_empty());
    }

    #[test]
    fn wanted_servers_should_not_count_terminating_not_ready_or_unplaced_endpoints() {
        let terminating = Conditions { ready: false, serving: true, terminating: true };
        let not_ready = Conditions { ready: false, serving: false, terminating: false };
        let mut unplaced = ready("10.244.0.14", 8080, "node1");
        unplaced.node_name = None;
        let ports = [port(
            "web",
            "http",
            Some(32000),
            vec![
                endpoint("10.244.0.11", 8080, "node1", terminating),
                endpoint("10.244.0.12", 8080, "node1", not_ready),
                ready("10.244.1.11", 8080, "node2"),
                unplaced,
            ],
        )];
        let wanted = wanted_servers(&ports, &node1());
        assert_eq!(wanted.servers[&32000].local_endpoints, 0, "a server that answers 503, not none");
    }

    #[test]
    fn wanted_servers_should_skip_services_without_a_health_check_node_port() {
        let ports = [port("web", "http", None, vec![ready("10.244.0.11", 8080, "node1")])];
        assert_eq!(wanted_servers(&ports, &node1()), WantedServers::default());
    }

    #[test]
    fn wanted_servers_should_give_a_port_claimed_twice_to_the_first_service_by_name() {
        let ports = [
            port("zebra", "http", Some(32000), vec![ready("10.244.0.11", 8080, "node1")]),
            port("alpha", "http", Some(32000), vec![]),
            port("other", "http", Some(32001), vec![]),
        ];
        let wanted = wanted_servers(&ports, &node1());
        assert_eq!(wanted.servers[&32000], WantedServer { service: name("alpha"), local_endpoints: 0 });
        assert_eq!(wanted.servers[&32001].service, name("other"));
        assert_eq!(
            wanted.conflicts,
            [PortClaimedTwice { port: 32000, kept: name("alpha"), refused: name("zebra") }]
        );
    }

    #[test]
    fn keeps_should_restart_a_server_whose_port_changes_service_or_addresses() {
        let web = WantedServer { service: name("web"), local_endpoints: 1 };
        let ips: Vec<IpAddr> = vec!["192.168.100.2".parse().unwrap()];
        assert!(keeps(&name("web"), &[], Some(&web), &[]));
        assert!(!keeps(&name("web"), &[], None, &[]), "Service gone");
        assert!(!keeps(&name("api"), &[], Some(&web), &[]), "port now another Service's");
        assert!(!keeps(&name("web"), &[], Some(&web), &ips), "node-port addresses changed");
    }

    #[tokio::test]
    async fn health_response_should_answer_200_with_the_weight_when_local_endpoints_exist() {
        let (code, weight, content_type, body) = parts(health_response(&name("web"), 2, true)).await;
        assert_eq!(code, 200);
        assert_eq!(weight.as_deref(), Some("2"));
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(
            body,
            serde_json::json!({
                "service": {"namespace": "shop", "name": "web"},
                "localEndpoints": 2,
                "serviceProxyHealthy": true
            })
        );
    }

    #[tokio::test]
    async fn health_response_should_answer_503_without_local_endpoints_or_when_the_proxy_is_unhealthy() {
        let (code, weight, _, body) = parts(health_response(&name("web"), 0, true)).await;
        assert_eq!((code, weight.as_deref()), (503, Some("0")));
        assert_eq!(body["localEndpoints"], 0);
        let (code, weight, _, body) = parts(health_response(&name("web"), 3, false)).await;
        assert_eq!((code, weight.as_deref()), (503, Some("3")));
        assert_eq!(body["serviceProxyHealthy"], false);
    }

    async fn body_text(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn health_response_should_have_kube_proxys_body_text() {
        assert_eq!(
            body_text(health_response(&name("web"), 1, true)).await,
            r#"{"service":{"namespace":"shop","name":"web"},"localEndpoints":1,"serviceProxyHealthy":true}"#
        );
        let quoted = ServiceName { namespace: "a\"b".into(), name: "c".into() };
        let value: serde_json::Value =
            serde_json::from_str(&body_text(health_response(&quoted, 0, true)).await).unwrap();
        assert_eq!(value["service"]["namespace"], "a\"b");
    }

    #[tokio::test]
    async fn answer_should_read_the_current_count_and_the_proxys_health() {
        let status = status();
        let state = Arc::new(ServerState {
            service: name("web"),
            local_endpoints: AtomicUsize::new(1),
            status: Arc::clone(&status),
        });
        let (code, _, _, _) = parts(answer(State(Arc::clone(&state))).await).await;
        assert_eq!(code, 200);

        state.local_endpoints.store(0, Ordering::Relaxed);
        let (code, weight, _, _) = parts(answer(State(Arc::clone(&state))).await).await;
        assert_eq!((code, weight.as_deref()), (503, Some("0")));

        state.local_endpoints.store(4, Ordering::Relaxed);
        let long_ago = Timestamp::now().checked_sub(jiff_seconds(600)).unwrap();
        status.health.queued(long_ago);
        let (code, weight, _, body) = parts(answer(State(Arc::clone(&state))).await).await;
        assert_eq!((code, weight.as_deref()), (503, Some("4")), "a change stuck for 10 minutes");
        assert_eq!(body["serviceProxyHealthy"], false);
    }

    fn jiff_seconds(seconds: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_secs(seconds)
    }
}
