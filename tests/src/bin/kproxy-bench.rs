//! `kproxy-bench`: what the real agent costs on a real kernel, inside a lab of network
//! namespaces. `hack/bench` builds the release binaries and runs this.
//!
//! ```text
//! kproxy-bench [--endpoints E] [--runs R] [--changes K] [--timeout SECONDS] [N ...]
//! ```
//!
//! For each cluster size N (default 1000 5000 10000) and each of R runs, in a fresh lab:
//!
//! 1. writes N Services (`bench/svc-<i>`, ClusterIP 10.96.0.10 + i, TCP 80 → 8080) each with
//!    one EndpointSlice of E ready endpoints (distinct pod IPs from 10.128.0.1 on) as
//!    multi-document files of 500 Services each;
//! 2. starts `kproxy run --manifests … --log-format json --min-sync-period 0s --sync-period 1h`
//!    in the node namespace and reads its JSON log: the first `synced` line is the full sync
//!    (`plan_ms`, `apply_ms`, `operations`, `elements`), timed also from the agent's start;
//! 3. K times, replaces one endpoint of one Service (rewriting that Service's file) and waits
//!    for the next `synced` line, timed also from the write;
//! 4. K times, adds a Service whose E endpoints are real pods of the lab, waits for the
//!    `synced` line and for the first TCP answer on its ClusterIP from the node;
//! 5. reads the agent's peak RSS (`VmHWM`), stops it (the rules stay), and times `nft -f` alone
//!    on the agent's full transaction (`kproxy debug render`): a cold load after
//!    `kproxy cleanup`, a replace of the loaded table, and a no-op element command;
//! 6. after another `kproxy cleanup`, serves the same cluster as JSON from a stand-in for the
//!    API server ([`kproxy_e2e::fake_api`]) on the node namespace's loopback, starts
//!    `kproxy run --kubeconfig …` against it, and times its full sync and reads its RSS: the
//!    path objects take in a cluster, without YAML.
//!
//! It prints one markdown table, medians with the range in brackets, on stdout; progress and
//! per-sample lines go to stderr. Every wait is bounded by `--timeout` (default 120 s); every lab
//! is removed at the end of its run, also on failure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kproxy_e2e::fake_api::{ApiObjects, FakeApi};
use kproxy_e2e::{
    Agent, Endpoint, EndpointSlice, Lab, Manifest, ManifestDir, NODE_NAME, Service, ServicePort,
};
use serde_json::json;

/// Services per manifest file: two documents each, below the 1024 documents per file that the
/// agent's YAML reader accepts.
const SERVICES_PER_FILE: usize = 500;
/// The port the Services listen on, and the one their endpoints serve.
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
/// Real pods in the lab, the endpoints of the added Services (at most this many).
const MAX_REAL_PODS: usize = 20;
/// How long one TCP probe of an added Service may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(20);
/// How often the agent's log is read while waiting for a line.
const LOG_POLL: Duration = Duration::from_millis(2);
/// The agent's flags besides the lab's (`run --manifests DIR --hostname-override node1`).
/// `--sync-period 1h` keeps the periodic full resync out of the measured window.
const AGENT_ARGS: [&str; 6] = ["--log-format", "json", "--min-sync-period", "0s", "--sync-period", "1h"];
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message == "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("kproxy-bench: {message}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    if std::env::var_os("KPROXY_BIN").is_none() {
        eprintln!("kproxy-bench: set KPROXY_BIN to the kproxy binary (hack/bench does)");
        return ExitCode::from(64);
    }
    if !kproxy_e2e::root_or_skip() {
        eprintln!("kproxy-bench: needs root (it builds network namespaces)");
        return ExitCode::FAILURE;
    }
    let mut results = Vec::new();
    for &size in &options.sizes {
        let mut stats = Stats::default();
        for run in 1..=options.runs {
            eprintln!("== N={size}, run {run}/{}", options.runs);
            if let Err(message) = bench_once(size, &options, &mut stats) {
                eprintln!("kproxy-bench: N={size}, run {run}: {message}");
                return ExitCode::FAILURE;
            }
        }
        results.push((size, stats));
    }
    print!("{}", markdown(&options, &results));
    ExitCode::SUCCESS
}

const USAGE: &str = "usage: kproxy-bench [--endpoints E] [--runs R] [--changes K] [--timeout SECONDS] [N ...]
  N            cluster sizes in Services (default: 1000 5000 10000)
  --endpoints  ready endpoints per Service (default 10)
  --runs       fresh labs per size; results are medians (default 1)
  --changes    endpoint changes and added Services per run (default 5)
  --timeout    bound on every wait, in seconds (default 120)
environment: KPROXY_BIN, the agent binary (required; hack/bench sets it)";

/// The command line.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    sizes: Vec<usize>,
    endpoints: usize,
    runs: usize,
    changes: usize,
    timeout: Duration,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut options = Options {
            sizes: Vec::new(),
            endpoints: 10,
            runs: 1,
            changes: 5,
            timeout: Duration::from_secs(120),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<usize, String> {
                let text = args.next().ok_or_else(|| format!("{name} needs a value"))?;
                text.parse().map_err(|_| format!("{name}: {text:?} is not a number"))
            };
            match arg.as_str() {
                "--endpoints" => options.endpoints = value("--endpoints")?,
                "--runs" => options.runs = value("--runs")?,
                "--changes" => options.changes = value("--changes")?,
                "--timeout" => options.timeout = Duration::from_secs(value("--timeout")? as u64),
                "-h" | "--help" => return Err("help".into()),
                size => options.sizes.push(size.parse().map_err(|_| format!("{size:?} is not a size"))?),
            }
        }
        if options.sizes.is_empty() {
            options.sizes = vec![1000, 5000, 10000];
        }
        if options.sizes.iter().any(|&n| n == 0 || n > 100_000) {
            return Err("sizes must be 1-100000 Services".into());
        }
        if options.endpoints == 0 || options.endpoints > 1000 {
            return Err("--endpoints must be 1-1000".into());
        }
        if options.runs == 0 {
            return Err("--runs must be at least 1".into());
        }
        if options.changes > 250 {
            return Err("--changes must be at most 250".into());
        }
        Ok(options)
    }
}

// === one run ===

/// One lab, one agent, one cluster of `size` Services: every measurement of one run.
fn bench_once(size: usize, options: &Options, stats: &mut Stats) -> Result<(), String> {
    let lab = Lab::new();
    let pods: Vec<Ipv4Addr> = (0..options.endpoints.min(MAX_REAL_PODS))
        .map(|k| {
            let pod = lab.add_pod(&format!("web{k}"));
            pod.serve_tcp(TARGET_PORT);
            pod.ip()
        })
        .collect();
    let mut cluster = Cluster::new(size, options.endpoints);
    let bytes = cluster.write_all(lab.manifests());
    stats.number("manifests_mib", bytes as f64 / MIB);

    let started = Instant::now();
    let agent = lab.start_kproxy_with(lab.manifests().path(), &AGENT_ARGS);
    let mut log = LogTail::new(agent.log_path());
    let full = log.next_sync(&agent, started + options.timeout)?;
    if full.service_ports.is_some_and(|ports| ports as usize != size) {
        return Err(format!("the full sync programmed {:?} Service ports, not {size}", full.service_ports));
    }
    stats.sync("full", &full, started.elapsed());
    let pid = kproxy_pid(agent.pid().ok_or("the agent is not running")?)?;
    stats.number("rss_after_full_mib", peak_rss_kib(pid)? as f64 / 1024.0);

    for change in 0..options.changes {
        let service = (7 + change * 997) % size;
        let slot = 3 % options.endpoints;
        cluster.endpoints[service][slot] = Ipv4Addr::new(10, 200, 0, u8::try_from(change + 1).unwrap_or(255));
        let written = Instant::now();
        cluster.write_file_of(service, lab.manifests());
        let sync = log.next_sync(&agent, written + options.timeout)?;
        stats.sync("endpoint", &sync, written.elapsed());
    }

    for added in 0..options.changes {
        let address = Ipv4Addr::new(10, 97, 0, u8::try_from(10 + added).unwrap_or(255));
        let service = Service::cluster_ip("bench", &format!("new-{added}"), &address.to_string())
            .port(ServicePort::tcp("http", SERVICE_PORT, TARGET_PORT));
        let slice =
            EndpointSlice::for_service(&service).endpoints(pods.iter().map(|ip| Endpoint::ready(*ip)));
        let target = SocketAddr::from((address, SERVICE_PORT));
        let deadline = Instant::now() + options.timeout;
        let written = Instant::now();
        lab.manifests().write(&format!("new-{added}.yaml"), &[&service, &slice]);
        let (sync, answered) = thread::scope(|scope| {
            let probe =
                scope.spawn(|| lab.run_in(lab.node_netns(), || first_answer(target, written, deadline)));
            let sync = log.next_sync(&agent, deadline).map(|event| (event, written.elapsed()));
            (sync, probe.join().unwrap_or(None))
        });
        let (sync, wall) = sync?;
        stats.sync("service", &sync, wall);
        let answered =
            answered.ok_or_else(|| format!("{target} never answered within {:?}", options.timeout))?;
        eprintln!("   new Service {target} answered {:.0} ms after the write", ms(answered));
        stats.number("service.answer_ms", ms(answered));
    }
    stats.number("rss_peak_mib", peak_rss_kib(pid)? as f64 / 1024.0);
    if agent.is_running() {
        agent.kill();
    }

    nft_alone(&lab, options, stats)?;
    api_full_sync(&lab, &cluster, options, stats)
}

/// Step 6: the full sync of the same cluster from the API source, on a clean kernel.
fn api_full_sync(lab: &Lab, cluster: &Cluster, options: &Options, stats: &mut Stats) -> Result<(), String> {
    let cleanup = lab.kproxy(&["cleanup"]);
    if !cleanup.success() {
        return Err(format!("kproxy cleanup failed: {cleanup}"));
    }
    let api = FakeApi::start(lab.node_netns(), &cluster.api_objects());
    let kubeconfig = api.kubeconfig(lab.scratch_path());
    let started = Instant::now();
    let agent = lab.start_kproxy_with_kubeconfig(&kubeconfig, &AGENT_ARGS);
    let mut log = LogTail::new(agent.log_path());
    let full = log.next_sync(&agent, started + options.timeout)?;
    let size = cluster.endpoints.len();
    if full.service_ports.is_some_and(|ports| ports as usize != size) {
        return Err(format!(
            "the API full sync programmed {:?} Service ports, not {size}",
            full.service_ports
        ));
    }
    stats.sync("api_full", &full, started.elapsed());
    let pid = kproxy_pid(agent.pid().ok_or("the agent is not running")?)?;
    stats.number("api_rss_after_full_mib", peak_rss_kib(pid)? as f64 / 1024.0);
    agent.kill();
    Ok(())
}

/// Times `nft -f` without the agent: the full transaction the agent would send now, loaded
/// cold and over the loaded table, and a no-op element command against the loaded table.
fn nft_alone(lab: &Lab, options: &Options, stats: &mut Stats) -> Result<(), String> {
    let manifests = lab.manifests().path().to_string_lossy().into_owned();
    let started = Instant::now();
    let render =
        lab.kproxy(&["debug", "render", "--manifests", &manifests, "--hostname-override", NODE_NAME]);
    let render_time = started.elapsed();
    if !render.success() {
        eprintln!("   skipping nft-alone timings: {render}");
        return Ok(());
    }
    stats.number("debug_render_s", render_time.as_secs_f64());
    let script = lab.scratch_path().join("full.nft");
    fs::write(&script, &render.stdout).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let cleanup = lab.kproxy(&["cleanup"]);
    if !cleanup.success() {
        return Err(format!("kproxy cleanup failed: {cleanup}"));
    }
    stats.number("script_mib", render.stdout.len() as f64 / MIB);
    let cold = timed_nft(lab, &script, options.timeout)?;
    stats.nft("nft_cold", &cold);
    let replace = timed_nft(lab, &script, options.timeout)?;
    stats.nft("nft_replace", &replace);

    // How much of nft's time the per-element comments cost: the same load without them.
    let bare = lab.scratch_path().join("full-without-comments.nft");
    let text: String = render.stdout.lines().map(|line| without_element_comments(line) + "\n").collect();
    fs::write(&bare, text).map_err(|e| format!("cannot write {}: {e}", bare.display()))?;
    let cleanup = lab.kproxy(&["cleanup"]);
    if !cleanup.success() {
        return Err(format!("kproxy cleanup failed: {cleanup}"));
    }
    let cold_bare = timed_nft(lab, &bare, options.timeout)?;
    stats.nft("nft_cold_bare", &cold_bare);

    // And how much the number of commands costs: the same load, comments kept, with each run
    // of `add element` commands into one set merged into one command.
    let merged = lab.scratch_path().join("full-merged.nft");
    fs::write(&merged, merge_element_commands(&render.stdout))
        .map_err(|e| format!("cannot write {}: {e}", merged.display()))?;
    let cleanup = lab.kproxy(&["cleanup"]);
    if !cleanup.success() {
        return Err(format!("kproxy cleanup failed: {cleanup}"));
    }
    let cold_merged = timed_nft(lab, &merged, options.timeout)?;
    stats.nft("nft_cold_merged", &cold_merged);
    if let Some(line) = render.stdout.lines().find(|line| line.starts_with("add element ")) {
        let noop = lab.scratch_path().join("noop.nft");
        fs::write(&noop, format!("{line}\n")).map_err(|e| format!("cannot write {}: {e}", noop.display()))?;
        let run = timed_nft(lab, &noop, options.timeout)?;
        stats.number("nft_noop_ms", run.wall.as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// An `add element` line without its elements' ` comment "…"` parts; other lines unchanged.
fn without_element_comments(line: &str) -> String {
    if !line.starts_with("add element ") {
        return line.to_owned();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(" comment \"") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " comment \"".len()..];
        // Comments never hold a quote: the renderer writes Service port names.
        let Some(end) = after.find('"') else { return line.to_owned() };
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The script with every run of consecutive `add element` commands into the same set written
/// as one command carrying all their elements.
fn merge_element_commands(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut open: Option<String> = None;
    for line in script.lines() {
        let parts = line.strip_prefix("add element ").and_then(|rest| {
            let (head, body) = rest.split_once(" { ")?;
            Some((format!("add element {head} {{ "), body.strip_suffix(" }")?))
        });
        match (parts, &open) {
            (Some((head, body)), Some(current)) if *current == head => {
                out.push_str(", ");
                out.push_str(body);
            }
            (Some((head, body)), _) => {
                if open.is_some() {
                    out.push_str(" }\n");
                }
                out.push_str(&head);
                out.push_str(body);
                open = Some(head);
            }
            (None, _) => {
                if open.take().is_some() {
                    out.push_str(" }\n");
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if open.is_some() {
        out.push_str(" }\n");
    }
    out
}

/// Probes `target` over TCP from the calling thread's namespace until it answers; the time
/// since `since`, or `None` at the deadline.
fn first_answer(target: SocketAddr, since: Instant, deadline: Instant) -> Option<Duration> {
    while Instant::now() < deadline {
        let attempt = Instant::now();
        if kproxy_e2e::client::tcp_request(target, PROBE_TIMEOUT).is_ok() {
            return Some(since.elapsed());
        }
        // A refusal or an unreachable route comes back at once: do not spin.
        if attempt.elapsed() < PROBE_TIMEOUT / 2 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    None
}

// === the synthetic cluster ===

/// The Services' endpoint addresses, written as files of [`SERVICES_PER_FILE`] Services.
struct Cluster {
    endpoints: Vec<Vec<Ipv4Addr>>,
}

impl Cluster {
    fn new(size: usize, endpoints: usize) -> Cluster {
        Cluster {
            endpoints: (0..size)
                .map(|i| (0..endpoints).map(|k| pod_ip(i * endpoints + k)).collect())
                .collect(),
        }
    }

    /// Writes every file; returns the bytes written.
    fn write_all(&self, dir: &ManifestDir) -> u64 {
        (0..self.endpoints.len().div_ceil(SERVICES_PER_FILE)).map(|file| self.write_file(file, dir)).sum()
    }

    /// The cluster as the API server would list it: JSON objects.
    fn api_objects(&self) -> ApiObjects {
        let services = (0..self.endpoints.len()).map(|i| {
            let ip = cluster_ip(i).to_string();
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{i}"), "namespace": "bench", "resourceVersion": "1"},
                "spec": {
                    "type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                    "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP", "targetPort": TARGET_PORT}],
                },
            })
        });
        let slices = self.endpoints.iter().enumerate().map(|(i, addresses)| {
            let endpoints: Vec<_> = addresses
                .iter()
                .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}))
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("svc-{i}-1"), "namespace": "bench", "resourceVersion": "1",
                    "labels": {"kubernetes.io/service-name": format!("svc-{i}")},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
                "endpoints": endpoints,
            })
        });
        ApiObjects {
            services: services.collect(),
            endpoint_slices: slices.collect(),
            ..ApiObjects::default()
        }
    }

    /// Rewrites the file that holds Service `service`.
    fn write_file_of(&self, service: usize, dir: &ManifestDir) {
        self.write_file(service / SERVICES_PER_FILE, dir);
    }

    fn write_file(&self, file: usize, dir: &ManifestDir) -> u64 {
        let range = file * SERVICES_PER_FILE..((file + 1) * SERVICES_PER_FILE).min(self.endpoints.len());
        let mut documents: Vec<Box<dyn Manifest>> = Vec::with_capacity(2 * range.len());
        for i in range {
            let service = Service::cluster_ip("bench", &format!("svc-{i}"), &cluster_ip(i).to_string())
                .port(ServicePort::tcp("http", SERVICE_PORT, TARGET_PORT));
            let slice = EndpointSlice::for_service(&service)
                .endpoints(self.endpoints[i].iter().map(|ip| Endpoint::ready(*ip)));
            documents.push(Box::new(service));
            documents.push(Box::new(slice));
        }
        let references: Vec<&dyn Manifest> = documents.iter().map(AsRef::as_ref).collect();
        let name = format!("cluster-{file:03}.yaml");
        dir.write(&name, &references);
        fs::metadata(dir.path().join(&name)).map(|m| m.len()).unwrap_or(0)
    }
}

/// The ClusterIP of Service `i`: 10.96.0.10, 10.96.0.11, … (as in `rules/benches/planner.rs`).
fn cluster_ip(i: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(10, 96, 0, 10), i)
}

/// Synthetic pod IP number `n`: 10.128.0.1, 10.128.0.2, … (never a real pod of the lab).
fn pod_ip(n: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(10, 128, 0, 1), n)
}

fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + u32::try_from(n).expect("a small index"))
}

// === the agent's log ===

/// One `synced` line of the agent's JSON log.
#[derive(Debug, Clone, PartialEq)]
struct SyncEvent {
    kind: Option<String>,
    plan_ms: Option<f64>,
    apply_ms: Option<f64>,
    operations: Option<f64>,
    elements: Option<f64>,
    service_ports: Option<f64>,
}

impl SyncEvent {
    /// The event of a JSON log line, if it is a `synced` line. Fields may sit at the top level
    /// or under `fields` (tracing-subscriber's default JSON layout).
    fn parse(line: &str) -> Option<SyncEvent> {
        let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let field = |name: &str| value.get("fields").and_then(|f| f.get(name)).or_else(|| value.get(name));
        if field("message")?.as_str()? != "synced" {
            return None;
        }
        let number = |name: &str| field(name).and_then(serde_json::Value::as_f64);
        Some(SyncEvent {
            kind: field("kind").and_then(serde_json::Value::as_str).map(str::to_owned),
            plan_ms: number("plan_ms"),
            apply_ms: number("apply_ms"),
            operations: number("operations"),
            elements: number("elements"),
            service_ports: number("service_ports"),
        })
    }
}

/// Whether a JSON log line is at level ERROR or WARN, for echoing to the terminal.
fn is_problem(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line.trim())
        .ok()
        .and_then(|v| {
            v.get("level").and_then(serde_json::Value::as_str).map(|l| matches!(l, "ERROR" | "WARN"))
        })
        .unwrap_or(false)
}

/// Follows the agent's log file, line by line.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(path: PathBuf) -> LogTail {
        LogTail { path, offset: 0, partial: String::new() }
    }

    /// Complete lines appended since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = fs::File::open(&self.path) else { return Vec::new() };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let read = file.read_to_end(&mut bytes).unwrap_or(0);
        self.offset += read as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_owned).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }

    /// Waits for the next `synced` line, echoing warnings and errors; fails at the deadline or
    /// when the agent exits.
    fn next_sync(&mut self, agent: &Agent, deadline: Instant) -> Result<SyncEvent, String> {
        loop {
            for line in self.new_lines() {
                if let Some(event) = SyncEvent::parse(&line) {
                    eprintln!("   {}", line.trim());
                    return Ok(event);
                }
                if is_problem(&line) {
                    eprintln!("   agent: {}", line.trim());
                }
            }
            if !agent.is_running() {
                return Err(format!("the agent exited; its log:\n{}", tail(&agent.log(), 30)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no `synced` line before the deadline; the log ends:\n{}",
                    tail(&agent.log(), 30)
                ));
            }
            thread::sleep(LOG_POLL);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// === processes ===

/// The kproxy process for the agent's pid: `ip netns exec` replaces itself with the program,
/// but if it ever forks, the program is its child.
fn kproxy_pid(pid: u32) -> Result<u32, String> {
    let is_kproxy = |pid: u32| {
        fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.file_name() == Some("kproxy".as_ref()))
    };
    if is_kproxy(pid) {
        return Ok(pid);
    }
    children(pid)
        .into_iter()
        .find(|&child| is_kproxy(child))
        .ok_or_else(|| format!("no kproxy process at or under pid {pid}"))
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// `VmHWM` of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("pid {pid}: {e}"))?;
    vm_hwm_kib(&status).ok_or_else(|| format!("pid {pid}: no VmHWM in /proc/{pid}/status"))
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// One `nft -f` run: wall time, and, when GNU time is installed, CPU times and peak RSS.
#[derive(Debug, Clone, PartialEq)]
struct NftRun {
    wall: Duration,
    user_s: Option<f64>,
    system_s: Option<f64>,
    max_rss_kib: Option<u64>,
}

/// Runs `nft -f script` in the node namespace (from a thread that entered it, so no
/// `ip netns exec` is timed), under `/usr/bin/time` when it exists.
fn timed_nft(lab: &Lab, script: &Path, timeout: Duration) -> Result<NftRun, String> {
    let gnu_time = Path::new("/usr/bin/time");
    let report = lab.scratch_path().join("time.out");
    let mut command = if gnu_time.is_file() {
        let mut command = Command::new(gnu_time);
        command.arg("-o").arg(&report).args(["-f", "%U %S %M", "nft", "-f"]).arg(script);
        command
    } else {
        let mut command = Command::new("nft");
        command.arg("-f").arg(script);
        command
    };
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let (status, wall, stderr) = lab.run_in(lab.node_netns(), || -> Result<_, String> {
        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| format!("cannot run nft: {e}"))?;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("nft -f {} did not finish within {timeout:?}", script.display()));
            }
            thread::sleep(Duration::from_micros(200));
        };
        let wall = started.elapsed();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        Ok((status, wall, stderr))
    })?;
    if !status.success() {
        return Err(format!("nft -f {} failed ({status}): {}", script.display(), stderr.trim()));
    }
    let times = fs::read_to_string(&report).unwrap_or_default();
    let fields: Vec<&str> = times.lines().last().unwrap_or("").split_whitespace().collect();
    let run = NftRun {
        wall,
        user_s: fields.first().and_then(|f| f.parse().ok()),
        system_s: fields.get(1).and_then(|f| f.parse().ok()),
        max_rss_kib: fields.get(2).and_then(|f| f.parse().ok()),
    };
    let _ = fs::remove_file(&report);
    eprintln!("   nft -f {}: {run:?}", script.display());
    Ok(run)
}

// === statistics and the table ===

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Every sample of one cluster size, by metric.
#[derive(Debug, Default)]
struct Stats {
    numbers: BTreeMap<String, Vec<f64>>,
    words: BTreeMap<String, Vec<String>>,
}

impl Stats {
    fn number(&mut self, key: &str, value: f64) {
        self.numbers.entry(key.to_owned()).or_default().push(value);
    }

    fn sync(&mut self, prefix: &str, event: &SyncEvent, wall: Duration) {
        self.words
            .entry(format!("{prefix}.kind"))
            .or_default()
            .push(event.kind.clone().unwrap_or_else(|| "?".into()));
        for (name, value) in [
            ("plan_ms", event.plan_ms),
            ("apply_ms", event.apply_ms),
            ("operations", event.operations),
            ("elements", event.elements),
        ] {
            if let Some(value) = value {
                self.number(&format!("{prefix}.{name}"), value);
            }
        }
        self.number(&format!("{prefix}.wall_ms"), ms(wall));
    }

    fn nft(&mut self, prefix: &str, run: &NftRun) {
        self.number(&format!("{prefix}_s"), run.wall.as_secs_f64());
        if let (Some(user), Some(system)) = (run.user_s, run.system_s) {
            self.number(&format!("{prefix}_user_s"), user);
            self.number(&format!("{prefix}_system_s"), system);
        }
        if let Some(rss) = run.max_rss_kib {
            self.number(&format!("{prefix}_rss_mib"), rss as f64 / 1024.0);
        }
    }

    /// The median and range of a metric, formatted with `decimals`; `–` without samples.
    fn cell(&self, key: &str, decimals: usize) -> String {
        if let Some(words) = self.words.get(key) {
            return word_counts(words);
        }
        let Some(values) = self.numbers.get(key).filter(|v| !v.is_empty()) else { return "–".into() };
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median = median(&sorted);
        let (low, high) = (sorted[0], sorted[sorted.len() - 1]);
        if sorted.len() == 1 || (high - low).abs() < 10f64.powi(-(decimals as i32)) {
            format!("{median:.decimals$}")
        } else {
            format!("{median:.decimals$} ({low:.decimals$}–{high:.decimals$})")
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 }
}

/// `incremental`, or `full ×1, incremental ×4` when the samples differ.
fn word_counts(words: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for word in words {
        *counts.entry(word).or_default() += 1;
    }
    if counts.len() == 1 {
        return counts.into_keys().next().unwrap_or_default().to_owned();
    }
    counts.iter().map(|(word, count)| format!("{word} ×{count}")).collect::<Vec<_>>().join(", ")
}

/// The rows of the table: label, metric, decimals.
const ROWS: &[(&str, &str, usize)] = &[
    ("manifests on disk, MiB", "manifests_mib", 1),
    ("**full sync**: kind", "full.kind", 0),
    ("full sync: plan ms (read + parse manifests + plan)", "full.plan_ms", 0),
    ("full sync: apply ms (`nft -f`)", "full.apply_ms", 0),
    ("full sync: agent start → `synced` line, ms", "full.wall_ms", 0),
    ("full sync: operations", "full.operations", 0),
    ("full sync: elements", "full.elements", 0),
    ("**one endpoint replaced**: kind", "endpoint.kind", 0),
    ("endpoint: plan ms (read + parse manifests + plan)", "endpoint.plan_ms", 1),
    ("endpoint: apply ms (`nft -f`)", "endpoint.apply_ms", 1),
    ("endpoint: file written → `synced` line, ms (includes the poll interval)", "endpoint.wall_ms", 0),
    ("endpoint: operations", "endpoint.operations", 0),
    ("endpoint: elements", "endpoint.elements", 0),
    ("**one Service added**: kind", "service.kind", 0),
    ("service: plan ms (read + parse manifests + plan)", "service.plan_ms", 1),
    ("service: apply ms (`nft -f`)", "service.apply_ms", 1),
    ("service: file written → `synced` line, ms", "service.wall_ms", 0),
    ("service: file written → first TCP answer, ms", "service.answer_ms", 0),
    ("service: operations", "service.operations", 0),
    ("service: elements", "service.elements", 0),
    ("**agent RSS** after the full sync (VmHWM), MiB", "rss_after_full_mib", 1),
    ("agent peak RSS over the run (VmHWM), MiB", "rss_peak_mib", 1),
    ("**nft alone**: cold load of the full transaction, s", "nft_cold_s", 2),
    ("nft alone: cold load, user CPU s", "nft_cold_user_s", 2),
    ("nft alone: cold load, system CPU s", "nft_cold_system_s", 2),
    ("nft alone: cold load, nft peak RSS, MiB", "nft_cold_rss_mib", 0),
    ("nft alone: replace of the loaded table, s", "nft_replace_s", 2),
    ("nft alone: no-op `add element` against the loaded table, ms", "nft_noop_ms", 1),
    ("nft alone: cold load without the element comments, s", "nft_cold_bare_s", 2),
    ("nft alone: cold load without the element comments, nft peak RSS, MiB", "nft_cold_bare_rss_mib", 0),
    ("nft alone: cold load with each set's `add element` commands merged, s", "nft_cold_merged_s", 2),
    ("nft alone: cold load merged, user CPU s", "nft_cold_merged_user_s", 2),
    ("nft alone: cold load merged, nft peak RSS, MiB", "nft_cold_merged_rss_mib", 0),
    ("full transaction text (`kproxy debug render`), MiB", "script_mib", 1),
    ("`kproxy debug render` (read + parse + plan + text, one shot), s", "debug_render_s", 2),
    ("**API source** (a stand-in API server, JSON): full sync: plan ms", "api_full.plan_ms", 0),
    ("API source: full sync: apply ms", "api_full.apply_ms", 0),
    ("API source: full sync: agent start → `synced` line, ms", "api_full.wall_ms", 0),
    ("API source: agent RSS after the full sync (VmHWM), MiB", "api_rss_after_full_mib", 1),
];

fn markdown(options: &Options, results: &[(usize, Stats)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nN Services × {} endpoints; {} run(s) per size, {} endpoint changes and {} added Services per run; \
         median (min–max) over all samples.\n",
        options.endpoints, options.runs, options.changes, options.changes
    );
    out.push_str("| |");
    for (size, _) in results {
        let _ = write!(out, " N={size} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(results.len()));
    out.push('\n');
    for (label, key, decimals) in ROWS {
        let _ = write!(out, "| {label} |");
        for (_, stats) in results {
            let _ = write!(out, " {} |", stats.cell(key, *decimals));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line in tracing-subscriber's default JSON layout, as the agent writes it.
    const SYNCED: &str = r#"{"timestamp":"2026-05-01T10:00:00.123456Z","level":"INFO","fields":{"message":"synced","kind":"incremental","plan_ms":412.5,"apply_ms":14,"operations":4,"elements":16,"service_ports":10001,"endpoints":100010},"target":"kproxy::commands::run"}"#;

    #[test]
    fn sync_event_should_read_the_fields_of_a_synced_line() {
        assert_eq!(
            SyncEvent::parse(SYNCED),
            Some(SyncEvent {
                kind: Some("incremental".into()),
                plan_ms: Some(412.5),
                apply_ms: Some(14.0),
                operations: Some(4.0),
                elements: Some(16.0),
                service_ports: Some(10001.0),
            })
        );
    }

    #[test]
    fn sync_event_should_read_flattened_fields_and_tolerate_missing_ones() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"synced","kind":"full","elapsed_ms":900}"#;
        let event = SyncEvent::parse(line).expect("a synced line");
        assert_eq!(event.kind.as_deref(), Some("full"));
        assert_eq!(event.plan_ms, None);
    }

    #[test]
    fn sync_event_should_ignore_other_lines() {
        for line in [
            r#"{"level":"INFO","fields":{"message":"starting","version":"nftables v1.0.6"}}"#,
            "=== e2e: start #1: ip netns exec kp1-0-node kproxy run ===",
            "",
            r#"{"fields":{"message":"synced \"almost\""}}"#,
        ] {
            assert_eq!(SyncEvent::parse(line), None, "{line}");
        }
    }

    #[test]
    fn is_problem_should_pick_warnings_and_errors() {
        assert!(is_problem(r#"{"level":"ERROR","fields":{"message":"sync failed"}}"#));
        assert!(!is_problem(SYNCED));
    }

    #[test]
    fn vm_hwm_should_be_read_in_kib() {
        let status = "Name:\tkproxy\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(23456));
        assert_eq!(vm_hwm_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn without_element_comments_should_drop_only_element_comments() {
        let line = r#"add element ip kproxy endpoints-tcp { 10.96.0.17 . tcp . 80 . 3 comment "bench/svc-7:http" : 10.128.0.75 . 8080, 10.96.0.17 . tcp . 80 . 4 comment "b" : 10.128.0.76 . 8080 }"#;
        assert_eq!(
            without_element_comments(line),
            "add element ip kproxy endpoints-tcp { 10.96.0.17 . tcp . 80 . 3 : 10.128.0.75 . 8080, \
             10.96.0.17 . tcp . 80 . 4 : 10.128.0.76 . 8080 }"
        );
        let table = r#"add table ip kproxy { comment "kproxy rules for node node1"; }"#;
        assert_eq!(without_element_comments(table), table);
    }

    #[test]
    fn merge_element_commands_should_join_runs_into_the_same_set() {
        let script = "add table ip t\n\
                      add element ip t a { 1 comment \"x\" : 2 }\n\
                      add element ip t a { 3 : 4, 5 : 6 }\n\
                      add element ip t b { 7 }\n\
                      add element ip t a { 8 }\n\
                      add rule ip t c accept\n";
        assert_eq!(
            merge_element_commands(script),
            "add table ip t\n\
             add element ip t a { 1 comment \"x\" : 2, 3 : 4, 5 : 6 }\n\
             add element ip t b { 7 }\n\
             add element ip t a { 8 }\n\
             add rule ip t c accept\n"
        );
    }

    #[test]
    fn options_should_default_and_validate() {
        let parse = |args: &[&str]| Options::parse(args.iter().map(|a| (*a).to_owned()));
        let defaults = parse(&[]).unwrap();
        assert_eq!((defaults.sizes, defaults.endpoints, defaults.runs), (vec![1000, 5000, 10000], 10, 1));
        let custom = parse(&["--runs", "3", "200", "--endpoints", "4"]).unwrap();
        assert_eq!((custom.sizes, custom.endpoints, custom.runs), (vec![200], 4, 3));
        for bad in [&["--runs"][..], &["abc"], &["0"], &["--endpoints", "0"], &["--runs", "x"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cells_should_show_the_median_and_the_range() {
        let mut stats = Stats::default();
        for value in [3.0, 1.0, 2.0, 10.0] {
            stats.number("x", value);
        }
        stats.number("one", 4.25);
        assert_eq!(stats.cell("x", 1), "2.5 (1.0–10.0)");
        assert_eq!(stats.cell("one", 1), "4.2");
        assert_eq!(stats.cell("missing", 1), "–");
        let event = SyncEvent::parse(SYNCED).unwrap();
        stats.sync("e", &event, Duration::from_millis(500));
        stats.sync("e", &SyncEvent { kind: Some("full".into()), ..event }, Duration::from_millis(700));
        assert_eq!(stats.cell("e.kind", 0), "full ×1, incremental ×1");
        assert_eq!(stats.cell("e.wall_ms", 0), "600 (500–700)");
    }

    #[test]
    fn addresses_should_be_distinct_and_in_their_ranges() {
        assert_eq!(cluster_ip(0), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(cluster_ip(9999), Ipv4Addr::new(10, 96, 39, 25));
        let cluster = Cluster::new(3, 2);
        assert_eq!(cluster.endpoints[2], vec![Ipv4Addr::new(10, 128, 0, 5), Ipv4Addr::new(10, 128, 0, 6)]);
    }
}
