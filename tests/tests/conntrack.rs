//! Stale UDP conntrack cleanup: a UDP client that keeps its source port follows the Service's
//! endpoints at once (no waiting for `nf_conntrack_udp_timeout`, which every packet renews),
//! also through zero endpoints and back; TCP and unrelated UDP entries are left alone.
//!
//! Without the cleanup the kernel keeps a UDP flow's first NAT decision for as long as the
//! client keeps sending, so in these tests the removed pod (whose server still runs) would keep
//! answering the same socket; each test asserts that it stops doing so.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kproxy_e2e::command;
use kproxy_e2e::netns::spawn_in;
use kproxy_e2e::{
    Agent, ClientError, Endpoint, EndpointSlice, Lab, Pod, Protocol, Reply, Service, ServicePort,
    root_or_skip,
};

/// How long a request on the fixed-port socket waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);
/// How soon after a manifest change the same socket must reach the new endpoint: the agent's
/// poll (250 ms) and minimum sync period (1 s), the cleanup, and slack for a busy machine. The
/// kernel alone would keep the old endpoint for as long as the client sends, and at least
/// `nf_conntrack_udp_timeout` (30 s) after it stops.
const MOVE_DEADLINE: Duration = Duration::from_secs(6);
/// Pause between two requests of a client that "keeps sending".
const SEND_INTERVAL: Duration = Duration::from_millis(50);

/// A UDP socket in `pod`'s namespace bound to `source_port` and connected to `service`, like a
/// long-lived client (statsd, DNS forwarder, QUIC) that never changes its source port.
fn fixed_port_client(lab: &Lab, pod: &Pod, source_port: u16, service: SocketAddr) -> UdpSocket {
    lab.run_in(pod.netns(), || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, source_port)).expect("bind the client port");
        socket.connect(service).expect("connect the client socket");
        socket.set_read_timeout(Some(ANSWER_TIMEOUT)).expect("set the read timeout");
        socket
    })
}

/// One request on `socket`; answers to earlier requests that arrive late are skipped.
fn ask(socket: &UdpSocket) -> Result<Reply, ClientError> {
    socket.send(b"who?\n")?;
    let mut buffer = [0_u8; 512];
    let length = socket.recv(&mut buffer)?;
    Reply::parse(&String::from_utf8_lossy(&buffer[..length]))
}

/// Keeps asking on `socket` until `pod` answers; returns how long that took and every answer
/// or failure seen before, in order.
///
/// # Panics
/// After `deadline`.
fn ask_until_answered_by(socket: &UdpSocket, pod: &str, deadline: Duration) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        match ask(socket) {
            Ok(reply) if reply.pod == pod => return (started.elapsed(), seen),
            Ok(reply) => seen.push(reply.pod),
            Err(error) => seen.push(error.to_string()),
        }
        assert!(
            started.elapsed() < deadline,
            "the client socket was not answered by {pod} within {deadline:?}; saw {}",
            summary(&seen)
        );
        thread::sleep(SEND_INTERVAL);
    }
}

/// "pod1 ×12, timeout ×3, pod2 ×1": runs of equal outcomes.
fn summary(seen: &[String]) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for outcome in seen {
        match runs.last_mut() {
            Some((last, count)) if last == outcome => *count += 1,
            _ => runs.push((outcome.clone(), 1)),
        }
    }
    let runs: Vec<String> = runs.iter().map(|(outcome, count)| format!("{outcome} ×{count}")).collect();
    if runs.is_empty() { "nothing".into() } else { runs.join(", ") }
}

/// The agent said what it deleted, and never that the cleanup failed.
fn assert_cleanup_logged(agent: &Agent) {
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|line| line.contains("conntrack")).collect();
    eprintln!("agent log, conntrack lines:\n{}", lines.join("\n"));
    assert!(lines.iter().any(|line| line.contains("stale UDP conntrack entries")), "no deletion logged");
    assert!(!lines.iter().any(|line| line.contains("cleanup failed")), "the cleanup failed");
}

/// `conntrack -L args…` in the node namespace: the entry lines.
fn conntrack_list(lab: &Lab, args: &[&str]) -> Vec<String> {
    let mut full = vec!["netns", "exec", lab.node_netns(), "conntrack", "-L"];
    full.extend_from_slice(args);
    let output = command::run("ip", &full, None);
    assert!(output.success(), "{} failed: {}", output.command, output.stderr);
    output.stdout.lines().map(str::to_owned).collect()
}

/// The `id=` of the one entry `conntrack -L args… -o id` lists.
fn conntrack_id(lab: &Lab, args: &[&str]) -> String {
    let mut full = args.to_vec();
    full.extend(["-o", "id"]);
    let lines = conntrack_list(lab, &full);
    assert_eq!(lines.len(), 1, "expected one entry for {args:?}, got {lines:#?}");
    lines[0]
        .split_whitespace()
        .find_map(|field| field.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no id= in {}", lines[0]))
        .to_owned()
}

#[test]
fn udp_client_should_move_to_a_live_endpoint_as_soon_as_its_endpoint_is_removed() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let pods = lab.add_pods(&["pod1", "pod2"]);
    for pod in &pods {
        pod.serve_udp(5301);
    }
    let service = Service::cluster_ip("default", "dns", "10.96.0.60").port(ServicePort::udp("dns", 53, 5301));
    let address = service.address("dns");
    let slice = |pods: &[&Pod]| {
        EndpointSlice::for_service(&service).endpoints(pods.iter().map(|p| Endpoint::ready(p.ip())))
    };
    lab.manifests().write("dns.yaml", &[&service, &slice(&[&pods[0], &pods[1]])]);
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Udp, address, &pods);

    let socket = fixed_port_client(&lab, &client, 40000, address);
    let first = ask(&socket).expect("the service answers the fixed-port client");
    let (old, new) = if first.pod == "pod1" { (&pods[0], &pods[1]) } else { (&pods[1], &pods[0]) };
    // The premise: conntrack pins the flow to one endpoint while the client keeps sending.
    for _ in 0..20 {
        let reply = ask(&socket).expect("answered");
        assert_eq!(reply.pod, old.name(), "one flow, one endpoint");
        thread::sleep(Duration::from_millis(5));
    }
    eprintln!("the fixed-port client is pinned to {}; removing that endpoint", old.name());

    lab.manifests().write("dns.yaml", &[&service, &slice(&[new])]);
    let (took, before) = ask_until_answered_by(&socket, new.name(), MOVE_DEADLINE);
    eprintln!(
        "the same socket reached {} {took:?} after {} was removed (before that: {})",
        new.name(),
        old.name(),
        summary(&before)
    );
    for _ in 0..30 {
        match ask(&socket) {
            Ok(reply) => assert_eq!(reply.pod, new.name(), "the removed endpoint must not receive any more"),
            Err(error) => panic!("the live endpoint stopped answering: {error}"),
        }
    }
    let entries = conntrack_list(&lab, &["-p", "udp", "--orig-port-src", "40000"]);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert!(
        entries[0].contains(&format!("src={} ", new.ip())),
        "the flow now replies from {}: {}",
        new.name(),
        entries[0]
    );
    assert_cleanup_logged(&agent);
}

#[test]
fn udp_service_scaled_to_zero_and_back_should_reach_the_new_endpoint_at_once() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let [old, new] = <[_; 2]>::try_from(lab.add_pods(&["old", "new"])).unwrap();
    for pod in [&old, &new] {
        pod.serve_udp(5301);
    }
    let service =
        Service::cluster_ip("default", "stats", "10.96.0.61").port(ServicePort::udp("statsd", 8125, 5301));
    let address = service.address("statsd");
    let slice = |pods: &[&Pod]| {
        EndpointSlice::for_service(&service).endpoints(pods.iter().map(|p| Endpoint::ready(p.ip())))
    };
    lab.manifests().write("stats.yaml", &[&service, &slice(&[&old])]);
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Udp, address, [&old]);

    let socket = fixed_port_client(&lab, &client, 40001, address);
    ask_until_answered_by(&socket, old.name(), MOVE_DEADLINE);

    // Zero endpoints: the entry that pins the flow to `old` must go now (kubernetes#139628),
    // although the client keeps sending and so keeps renewing it.
    lab.manifests().write("stats.yaml", &[&service, &slice(&[])]);
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        match ask(&socket) {
            Ok(reply) => seen.push(reply.pod),
            Err(error) => {
                seen.push(error.to_string());
                if conntrack_list(&lab, &["-p", "udp", "--orig-port-src", "40001"]).is_empty() {
                    break;
                }
            }
        }
        assert!(
            started.elapsed() < MOVE_DEADLINE,
            "with zero endpoints the flow kept its conntrack entry for {MOVE_DEADLINE:?}; saw {}; entries {:#?}",
            summary(&seen),
            conntrack_list(&lab, &["-p", "udp", "--orig-port-src", "40001"])
        );
        thread::sleep(SEND_INTERVAL);
    }
    eprintln!(
        "zero endpoints: the flow's entry was gone {:?} later (saw {})",
        started.elapsed(),
        summary(&seen)
    );

    // Back to one endpoint, a new pod: the same socket reaches it at once, and `old` never again.
    lab.manifests().write("stats.yaml", &[&service, &slice(&[&new])]);
    let (took, before) = ask_until_answered_by(&socket, new.name(), MOVE_DEADLINE);
    eprintln!(
        "scaled back up: the same socket reached {} {took:?} later (before: {})",
        new.name(),
        summary(&before)
    );
    assert!(
        !before.iter().any(|outcome| outcome == old.name()),
        "the old endpoint answered again: {}",
        summary(&before)
    );
    for _ in 0..20 {
        assert_eq!(ask(&socket).expect("answered").pod, new.name());
    }
    assert_cleanup_logged(&agent);
}

/// A TCP server for `pod` on `port` that keeps every connection open: it greets with the pod's
/// name, then echoes each line. Stops and joins on drop.
struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(pod: &Pod, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (bound, listening) = std::sync::mpsc::channel();
        let name = pod.name().to_owned();
        let thread = spawn_in(pod.netns(), {
            let stop = Arc::clone(&stop);
            move || {
                let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind the echo port");
                listener.set_nonblocking(true).expect("non-blocking listener");
                bound.send(()).expect("report bound");
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (name, stop) = (name.clone(), Arc::clone(&stop));
                            connections.push(thread::spawn(move || echo(stream, &name, &stop)));
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10))
                        }
                        Err(error) => panic!("accept: {error}"),
                    }
                }
                for connection in connections {
                    let _ = connection.join();
                }
            }
        });
        listening.recv().expect("the echo server started");
        Self { stop, thread: Some(thread) }
    }
}

fn echo(stream: TcpStream, name: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut writer = stream.try_clone().expect("clone the stream");
    if writeln!(writer, "{name}").is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if writer.write_all(line.as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One round trip on a long-lived TCP connection.
fn echo_round_trip(reader: &mut BufReader<TcpStream>, text: &str) -> String {
    writeln!(reader.get_mut(), "{text}").expect("send on the TCP connection");
    let mut line = String::new();
    reader.read_line(&mut line).expect("read on the TCP connection");
    line.trim_end().to_owned()
}

#[test]
fn conntrack_cleanup_should_leave_tcp_and_unrelated_udp_entries_alone() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let [pod1, pod2] = <[_; 2]>::try_from(lab.add_pods(&["pod1", "pod2"])).unwrap();
    for pod in [&pod1, &pod2] {
        pod.serve_udp(5301);
    }
    let _echo = EchoServer::start(&pod1, 5300);
    // One frontend address and port, on both protocols; and a second UDP Service.
    let dns = Service::cluster_ip("default", "dns", "10.96.0.62")
        .port(ServicePort::udp("dns", 53, 5301))
        .port(ServicePort::tcp("dns-tcp", 53, 5300));
    let other = Service::cluster_ip("default", "other", "10.96.0.63").port(ServicePort::udp("dns", 53, 5301));
    let dns_slice = |pods: &[&Pod]| {
        EndpointSlice::for_service(&dns).endpoints(pods.iter().map(|p| Endpoint::ready(p.ip())))
    };
    lab.manifests().write("dns.yaml", &[&dns, &dns_slice(&[&pod1])]);
    lab.manifests().write(
        "other.yaml",
        &[&other, &EndpointSlice::for_service(&other).endpoint(Endpoint::ready(pod2.ip()))],
    );
    let agent = lab.start_kproxy(lab.manifests().path());
    lab.wait_for_answers(client.netns(), Protocol::Udp, dns.address("dns"), [&pod1]);
    lab.wait_for_answers(client.netns(), Protocol::Udp, other.address("dns"), [&pod2]);

    // A long-lived TCP connection to the very frontend whose UDP entries go stale.
    let tcp_address = dns.address("dns-tcp");
    let stream = lab
        .run_in(client.netns(), || TcpStream::connect_timeout(&tcp_address, Duration::from_secs(2)))
        .expect("connect over TCP");
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tcp_port = stream.local_addr().unwrap().port().to_string();
    let mut tcp = BufReader::new(stream);
    let mut greeting = String::new();
    tcp.read_line(&mut greeting).expect("the echo server greets");
    assert_eq!(greeting.trim_end(), "pod1");
    assert_eq!(echo_round_trip(&mut tcp, "before"), "before");

    let stale = fixed_port_client(&lab, &client, 40010, dns.address("dns"));
    let other_service = fixed_port_client(&lab, &client, 40011, other.address("dns"));
    let pod_to_pod = fixed_port_client(&lab, &client, 40012, pod2.address(5301));
    for (socket, pod) in [(&stale, "pod1"), (&other_service, "pod2"), (&pod_to_pod, "pod2")] {
        assert_eq!(ask(socket).expect("answered").pod, pod);
    }
    let tcp_id = conntrack_id(&lab, &["-p", "tcp", "--orig-port-src", &tcp_port]);
    let other_id = conntrack_id(&lab, &["-p", "udp", "--orig-port-src", "40011"]);
    let pod_to_pod_id = conntrack_id(&lab, &["-p", "udp", "--orig-port-src", "40012"]);
    conntrack_id(&lab, &["-p", "udp", "--orig-port-src", "40010"]);

    // pod1 leaves: its UDP entry to the shared frontend is stale, nothing else is.
    lab.manifests().write("dns.yaml", &[&dns, &dns_slice(&[])]);
    let started = Instant::now();
    lab.eventually("the stale UDP entry to be deleted", || {
        let entries = conntrack_list(&lab, &["-p", "udp", "--orig-port-src", "40010"]);
        if entries.is_empty() { Ok(()) } else { Err(format!("{entries:#?}")) }
    });
    eprintln!("the stale UDP entry was deleted {:?} after pod1 left", started.elapsed());

    assert_eq!(
        conntrack_id(&lab, &["-p", "tcp", "--orig-port-src", &tcp_port]),
        tcp_id,
        "the TCP entry was replaced"
    );
    assert_eq!(
        conntrack_id(&lab, &["-p", "udp", "--orig-port-src", "40011"]),
        other_id,
        "another Service's entry was replaced"
    );
    assert_eq!(
        conntrack_id(&lab, &["-p", "udp", "--orig-port-src", "40012"]),
        pod_to_pod_id,
        "a pod-to-pod entry was replaced"
    );
    assert_eq!(echo_round_trip(&mut tcp, "after"), "after", "the TCP connection still works");
    assert_eq!(ask(&other_service).expect("answered").pod, "pod2");
    assert_eq!(ask(&pod_to_pod).expect("answered").pod, "pod2");
    assert_cleanup_logged(&agent);
}
