//! The lab: a node namespace with an uplink to a gateway namespace, pods on point-to-point veth
//! pairs (IPv4 and IPv6), on demand a second node with remote pods and an external client
//! behind the gateway, a scratch directory for manifests and logs, and clean removal of all of
//! it on drop — also when the test panics.
//!
//! ```text
//!   pod1 10.244.0.11/32 fd00:10:244::11/128 eth0 ── vp-pod1 10.244.0.1/32 fd00:10:244::1/128 ┐
//!   pod2 10.244.0.12/32 fd00:10:244::12/128 eth0 ── vp-pod2 (same)                            ├ node
//!   …                                                                                          ┘ (node1)
//!   node: up0 192.168.100.2/24 fd00:192:168:100::2/64, default via gw; forwarding on
//!         to-node2 10.0.12.1/30 fd00:10:0:12::1/64; 10.244.2.0/24, fd00:10:244:2::/64 via node2
//!   gw:   up0 192.168.100.1/24 fd00:192:168:100::1/64 — no forwarding until an external client
//!         is added; then forwarding on, blackhole default, 10.244.0.0/16, fd00:10:244::/48 and
//!         203.0.113.0/24 (external and load-balancer IPs) via the node, and packets coming back
//!         from the node for those prefixes dropped (no routing loop: uncaptured means dropped)
//!         ext0 192.168.200.1/24 fd00:192:168:200::1/64
//!   ext:  eth0 192.168.200.2/24 (+ .3–.20 /32) fd00:192:168:200::2/64, default via gw
//!   node2 (on demand): to-node1 10.0.12.2/30 fd00:10:0:12::2/64, forwarding on,
//!         10.244.0.0/16 192.168.0.0/16 fd00:10:244::/48 fd00:192:168::/48 via node;
//!         remote pods 10.244.2.N/32 fd00:10:244:2::N/128 behind vp-<pod> 10.244.2.1 fd00:10:244:2::1
//! ```
//!
//! Every IPv6 address is added `nodad` and DAD is off in every namespace, so addresses (and the
//! link-local ones neighbour discovery needs) work at once.

mod node_commands;
mod routing;
mod traffic;

pub use routing::ExternalClient;
pub use traffic::Source;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::agent::AgentProcess;
use crate::command::ip;
use crate::manifest::ManifestDir;
use crate::netns;
use crate::pod::Pod;

/// The node name the agent runs as (`--hostname-override`) and endpoints carry (`nodeName`).
pub const NODE_NAME: &str = "node1";
/// The node's address on every pod veth: the pods' gateway, and the source of masqueraded
/// (hairpin) traffic.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's address on its uplink `up0`.
pub const NODE_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
/// The gateway namespace's address on `up0`: the node's default route.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
/// The node's IPv6 address on its uplink `up0`.
pub const NODE_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x100, 0, 0, 0, 2);
/// The gateway's IPv6 address on `up0`: the node's IPv6 default route.
pub const GATEWAY_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x100, 0, 0, 0, 1);
/// The node's IPv6 address on every pod veth: the pods' IPv6 gateway.
pub const POD_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1);
/// The zone of the lab's node (the `topology.kubernetes.io/zone` label of [`crate::Node::lab_node`]).
pub const NODE_ZONE: &str = "zone-a";
/// The second node, home of the remote pods (their endpoints' `nodeName`).
pub const NODE2_NAME: &str = "node2";
/// The node's address on its link to node2: the source of traffic masqueraded towards a remote
/// pod.
pub const NODE_LINK_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 12, 1);
/// Node2's address on its link to the node.
pub const NODE2_LINK_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 12, 2);
/// The node's IPv6 address on its link to node2.
pub const NODE_LINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0x12, 0, 0, 0, 1);
/// Node2's IPv6 address on its link to the node.
pub const NODE2_LINK_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0x12, 0, 0, 0, 2);
/// Node2's address on every remote pod's veth: the remote pods' gateway.
pub const REMOTE_POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
/// Node2's IPv6 address on every remote pod's veth.
pub const REMOTE_POD_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 2, 0, 0, 0, 1);
/// The external client's (primary) address.
pub const EXTERNAL_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 2);
/// The external client's IPv6 address.
pub const EXTERNAL_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x200, 0, 0, 0, 2);
/// The range the gateway routes to the node for external and load-balancer IPs.
pub const EXTERNAL_IP_RANGE: &str = "203.0.113.0/24";
/// The pod CIDRs of both nodes, for the agent's `--cluster-cidr`.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16,fd00:10:244::/48";

/// The first host number given to a pod: pod addresses are 10.244.0.11, .12, …
const FIRST_POD_HOST: u8 = 11;
/// Longest pod name: `vp-<pod>` must fit the 15 characters of an interface name.
const MAX_POD_NAME: usize = 12;

/// Labs made by this process so far; part of every namespace name.
static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add/del` mount-propagate `/run/netns`; racing them can stack mounts, so this process
/// runs them one at a time.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
/// Stale namespaces of dead test processes are swept once per process.
static SWEEP: Once = Once::new();

/// A lab of network namespaces. See the module documentation for the topology.
///
/// Every namespace is named `kp<pid>-<n>-<role>` and is removed when the lab is dropped, after
/// its servers and agents have stopped.
#[derive(Debug)]
pub struct Lab {
    id: String,
    node: String,
    gateway: String,
    pods: Mutex<Vec<Pod>>,
    /// Node2's namespace, once a remote pod asked for it.
    node2: Mutex<Option<String>>,
    /// The external client, once added.
    external: Mutex<Option<ExternalClient>>,
    /// Whether the gateway forwards and routes the cluster's prefixes to the node yet.
    gateway_routes: Mutex<bool>,
    shared: Arc<LabShared>,
    agents_started: AtomicUsize,
    scratch: Option<tempfile::TempDir>,
    manifests: ManifestDir,
}

/// What pods and agents share with the lab: the stop flag, the threads and processes to stop,
/// the namespaces to remove.
#[derive(Debug, Default)]
pub(crate) struct LabShared {
    /// Set on drop; every server thread polls it.
    pub(crate) stop: Arc<AtomicBool>,
    servers: Mutex<Vec<JoinHandle<()>>>,
    agents: Mutex<Vec<Arc<Mutex<AgentProcess>>>>,
    namespaces: Mutex<Vec<String>>,
}

impl LabShared {
    /// Takes charge of a server thread, joined when the lab is dropped.
    pub(crate) fn adopt_server(&self, handle: JoinHandle<()>) {
        lock(&self.servers).push(handle);
    }
}

impl Lab {
    /// Builds the node and gateway namespaces (see the module documentation).
    ///
    /// # Panics
    /// If any step fails; whatever was created is removed again.
    #[must_use]
    pub fn new() -> Self {
        SWEEP.call_once(sweep_stale_namespaces);
        let id = format!("kp{}-{}", std::process::id(), LAB_COUNTER.fetch_add(1, Ordering::Relaxed));
        let scratch = tempfile::Builder::new()
            .prefix(&format!("kproxy-e2e-{id}-"))
            .tempdir()
            .expect("create the lab's scratch directory");
        let manifests = ManifestDir::create(scratch.path().join("manifests"));
        // From here on the value exists, so a failing step still removes what was made.
        let lab = Self {
            node: format!("{id}-node"),
            gateway: format!("{id}-gw"),
            id,
            pods: Mutex::new(Vec::new()),
            node2: Mutex::new(None),
            external: Mutex::new(None),
            gateway_routes: Mutex::new(false),
            shared: Arc::default(),
            agents_started: AtomicUsize::new(0),
            scratch: Some(scratch),
            manifests,
        };
        lab.build_node_and_gateway();
        eprintln!("lab {}: node netns {}, scratch {}", lab.id, lab.node, lab.scratch_path().display());
        lab
    }

    fn build_node_and_gateway(&self) {
        let (node, gateway) = (self.node.as_str(), self.gateway.as_str());
        self.add_namespace(node);
        self.add_namespace(gateway);
        ip(&["-n", node, "link", "add", "up0", "type", "veth", "peer", "name", "up0", "netns", gateway]);
        ip(&["-n", node, "addr", "add", &format!("{NODE_UPLINK_IP}/24"), "dev", "up0"]);
        ip(&["-n", gateway, "addr", "add", &format!("{GATEWAY_IP}/24"), "dev", "up0"]);
        ip(&["-n", node, "-6", "addr", "add", &format!("{NODE_UPLINK_IP6}/64"), "dev", "up0", "nodad"]);
        ip(&["-n", gateway, "-6", "addr", "add", &format!("{GATEWAY_IP6}/64"), "dev", "up0", "nodad"]);
        ip(&["-n", node, "link", "set", "up0", "up"]);
        ip(&["-n", gateway, "link", "set", "up0", "up"]);
        ip(&["-n", node, "route", "add", "default", "via", &GATEWAY_IP.to_string()]);
        ip(&["-n", node, "-6", "route", "add", "default", "via", &GATEWAY_IP6.to_string()]);
        self.run_in(node, || {
            write_sysctl("net/ipv4/ip_forward", "1");
            write_sysctl("net/ipv6/conf/all/forwarding", "1");
        });
        self.run_in(gateway, || write_sysctl("net/ipv4/ip_forward", "0"));
    }

    /// Creates namespace `name` with `lo` up and IPv6 duplicate address detection off (for the
    /// interfaces created in it later), and registers it for removal.
    fn add_namespace(&self, name: &str) {
        {
            let _serial = lock(&NETNS_LOCK);
            ip(&["netns", "add", name]);
        }
        lock(&self.shared.namespaces).push(name.to_owned());
        self.run_in(name, || {
            for scope in ["all", "default"] {
                write_sysctl(&format!("net/ipv6/conf/{scope}/accept_dad"), "0");
            }
        });
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// Adds pod `name` on the node (`node1`): namespace `<lab>-<name>`, `eth0` with the next
    /// addresses `10.244.0.N/32` and `fd00:10:244::N/128` (N = 11, 12, … in order; the IPv6 host
    /// part shows the same digits), routes `10.244.0.1 dev eth0`, `default via 10.244.0.1 dev eth0
    /// onlink` and the IPv6 equivalents via `fd00:10:244::1`; on the node `vp-<name>` with
    /// `10.244.0.1/32` and `fd00:10:244::1/128` and routes to the pod's two addresses.
    ///
    /// # Panics
    /// If the name is not 1–12 characters of `[a-z0-9-]`, is taken, or a step fails.
    pub fn add_pod(&self, name: &str) -> Pod {
        self.add_pod_on(name, PodHost::Node)
    }

    /// Adds pod `name` on node2 (created on first use, see the module documentation), like
    /// [`Lab::add_pod`] but with `10.244.2.N/32` and `fd00:10:244:2::N/128` behind node2's
    /// `vp-<name>` (gateway `10.244.2.1`, `fd00:10:244:2::1`). Its endpoints carry
    /// `nodeName: node2` ([`crate::Endpoint::of`]).
    ///
    /// # Panics
    /// Like [`Lab::add_pod`].
    pub fn add_remote_pod(&self, name: &str) -> Pod {
        self.add_pod_on(name, PodHost::Node2)
    }

    fn add_pod_on(&self, name: &str, host: PodHost) -> Pod {
        assert!(
            !name.is_empty()
                && name.len() <= MAX_POD_NAME
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-'),
            "pod name {name:?} must be 1-{MAX_POD_NAME} characters of [a-z0-9-]"
        );
        assert!(!["node", "gw", "node2", "ext"].contains(&name), "pod name {name:?} is reserved");
        let host_netns = match host {
            PodHost::Node => self.node.clone(),
            PodHost::Node2 => self.node2_netns_or_create(),
        };
        let mut pods = lock(&self.pods);
        assert!(pods.iter().all(|pod| pod.name != name), "pod {name:?} exists already");
        let node_name = host.node_name();
        let on_host = pods.iter().filter(|pod| pod.node_name == node_name).count();
        let number = u8::try_from(usize::from(FIRST_POD_HOST) + on_host).expect("at most 244 pods per node");
        let (pod_ip, pod_ip6) = host.pod_addresses(number);
        let (gateway, gateway6) = host.gateway();
        let (gateway, gateway6) = (gateway.to_string(), gateway6.to_string());
        let netns = format!("{}-{name}", self.id);
        let veth = format!("vp-{name}");
        let node = host_netns.as_str();

        self.add_namespace(&netns);
        ip(&["-n", node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        ip(&["-n", &netns, "addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"]);
        ip(&["-n", &netns, "-6", "addr", "add", &format!("{pod_ip6}/128"), "dev", "eth0", "nodad"]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "route", "add", &gateway, "dev", "eth0"]);
        ip(&["-n", &netns, "route", "add", "default", "via", &gateway, "dev", "eth0", "onlink"]);
        ip(&["-n", &netns, "-6", "route", "add", &gateway6, "dev", "eth0"]);
        ip(&["-n", &netns, "-6", "route", "add", "default", "via", &gateway6, "dev", "eth0"]);
        ip(&["-n", node, "addr", "add", &format!("{gateway}/32"), "dev", &veth]);
        ip(&["-n", node, "-6", "addr", "add", &format!("{gateway6}/128"), "dev", &veth, "nodad"]);
        ip(&["-n", node, "link", "set", &veth, "up"]);
        ip(&["-n", node, "route", "add", &format!("{pod_ip}/32"), "dev", &veth]);
        ip(&["-n", node, "-6", "route", "add", &format!("{pod_ip6}/128"), "dev", &veth]);

        let pod = Pod {
            name: name.to_owned(),
            ip: pod_ip,
            ip6: pod_ip6,
            node_name,
            netns,
            shared: Arc::clone(&self.shared),
        };
        pods.push(pod.clone());
        pod
    }

    /// Adds one pod per name, in order (see [`Lab::add_pod`]).
    pub fn add_pods(&self, names: &[&str]) -> Vec<Pod> {
        names.iter().map(|name| self.add_pod(name)).collect()
    }

    /// The lab's id, `kp<pid>-<n>`, the prefix of all its namespaces.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's network namespace, where the agent runs.
    #[must_use]
    pub fn node_netns(&self) -> &str {
        &self.node
    }

    /// The gateway's network namespace.
    #[must_use]
    pub fn gateway_netns(&self) -> &str {
        &self.gateway
    }

    /// Every address of the node namespace (uplink, pod gateways, link to node2; both
    /// families): a masqueraded connection reaches a pod from one of these.
    #[must_use]
    pub fn node_addresses(&self) -> Vec<std::net::IpAddr> {
        vec![
            NODE_UPLINK_IP.into(),
            NODE_UPLINK_IP6.into(),
            POD_GATEWAY.into(),
            POD_GATEWAY6.into(),
            NODE_LINK_IP.into(),
            NODE_LINK_IP6.into(),
        ]
    }

    /// Every namespace of the lab, in creation order.
    #[must_use]
    pub fn namespaces(&self) -> Vec<String> {
        lock(&self.shared.namespaces).clone()
    }

    /// The scratch directory (manifests, agent logs).
    #[must_use]
    pub fn scratch_path(&self) -> &Path {
        self.scratch.as_ref().expect("the scratch directory lives as long as the lab").path()
    }

    /// The manifests directory the agent should watch.
    #[must_use]
    pub fn manifests(&self) -> &ManifestDir {
        &self.manifests
    }

    /// Runs `work` in a thread inside namespace `netns` (see [`netns::run_in`]).
    pub fn run_in<T: Send>(&self, netns: &str, work: impl FnOnce() -> T + Send) -> T {
        netns::run_in(netns, work)
    }

    // === teardown ===

    fn print_diagnostics(&self) {
        eprintln!("===== lab {} failed: diagnostics =====", self.id);
        for agent in lock(&self.shared.agents).iter() {
            let process = lock(agent);
            let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
            eprintln!("----- {} (last 300 lines) -----", process.log_path().display());
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(300)..] {
                eprintln!("{line}");
            }
        }
        if self.namespaces().contains(&self.node) {
            match Command::new("ip").args(["netns", "exec", &self.node, "nft", "list", "ruleset"]).output() {
                Ok(output) => eprintln!(
                    "----- nft list ruleset (node) -----\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(error) => eprintln!("cannot run nft: {error}"),
            }
        }
        eprintln!("===== end of diagnostics for lab {} =====", self.id);
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        let keep_scratch = panicking && !lock(&self.shared.agents).is_empty();
        self.shared.stop.store(true, Ordering::Relaxed);
        if panicking {
            self.print_diagnostics();
        }
        for agent in lock(&self.shared.agents).drain(..) {
            lock(&agent).stop_if_running();
        }
        for server in lock(&self.shared.servers).drain(..) {
            let _ = server.join();
        }
        let namespaces: Vec<String> = lock(&self.shared.namespaces).drain(..).collect();
        for name in namespaces.iter().rev() {
            delete_namespace(name);
        }
        if let Some(scratch) = self.scratch.take()
            && keep_scratch
        {
            eprintln!(
                "lab {}: kept the scratch directory {} (agent logs)",
                self.id,
                scratch.keep().display()
            );
        }
    }
}

/// Which node a pod runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodHost {
    /// The node the agent runs on (`node1`).
    Node,
    /// The second node (`node2`).
    Node2,
}

impl PodHost {
    fn node_name(self) -> &'static str {
        match self {
            Self::Node => NODE_NAME,
            Self::Node2 => NODE2_NAME,
        }
    }

    /// The pod subnet's third byte (IPv4) and fourth group (IPv6).
    fn subnet(self) -> u8 {
        match self {
            Self::Node => 0,
            Self::Node2 => 2,
        }
    }

    /// `10.244.S.N` and `fd00:10:244:S::N`, the IPv6 host part written with N's decimal digits.
    fn pod_addresses(self, number: u8) -> (Ipv4Addr, Ipv6Addr) {
        let subnet = self.subnet();
        let host6 = u16::from_str_radix(&number.to_string(), 16).expect("decimal digits are hex digits");
        (
            Ipv4Addr::new(10, 244, subnet, number),
            Ipv6Addr::new(0xfd00, 0x10, 0x244, subnet.into(), 0, 0, 0, host6),
        )
    }

    fn gateway(self) -> (Ipv4Addr, Ipv6Addr) {
        match self {
            Self::Node => (POD_GATEWAY, POD_GATEWAY6),
            Self::Node2 => (REMOTE_POD_GATEWAY, REMOTE_POD_GATEWAY6),
        }
    }
}

/// Locks a mutex, ignoring poisoning: teardown must go on after a panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a sysctl of the calling thread's network namespace (`/proc/sys/net/…` follows the
/// thread's namespace).
fn write_sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).unwrap_or_else(|error| panic!("cannot write {path}: {error}"));
    let read = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(read.trim(), value, "{path} did not take the value");
}

/// Removes a namespace without panicking (this runs in `Drop`); retries briefly.
fn delete_namespace(name: &str) {
    let _serial = lock(&NETNS_LOCK);
    for attempt in 1..=5 {
        let outcome = Command::new("ip")
            .args(["netns", "delete", name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match outcome {
            Ok(output) if output.status.success() => return,
            Ok(_) if !netns::namespace_path(name).exists() => return,
            Ok(output) if attempt == 5 => {
                eprintln!("cannot delete netns {name}: {}", String::from_utf8_lossy(&output.stderr));
            }
            Err(error) if attempt == 5 => eprintln!("cannot run ip netns delete {name}: {error}"),
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Removes namespaces `kp<pid>-…` left behind by test processes that no longer exist (killed
/// before their labs could drop).
fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("kp").and_then(|rest| rest.split('-').next()) else { continue };
        if pid.is_empty() || !pid.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        if pid != std::process::id().to_string() && !Path::new("/proc").join(pid).exists() {
            eprintln!("removing stale lab namespace {name} (process {pid} is gone)");
            delete_namespace(&name);
        }
    }
}
