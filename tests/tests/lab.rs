//! Self-tests of the lab itself, without the agent: the topology carries traffic the way the
//! agent's tests assume, and nothing is left behind.

use std::net::{IpAddr, SocketAddr};
use std::panic;
use std::process::Command;
use std::time::{Duration, Instant};

use kproxy_e2e::{
    ClientError, EXTERNAL_CLIENT_IP, Lab, NODE_LINK_IP, NODE_LINK_IP6, NODE_UPLINK_IP, NODE_UPLINK_IP6,
    POD_GATEWAY, POD_GATEWAY6, Protocol, Reply, root_or_skip,
};

const TIMEOUT: Duration = Duration::from_secs(2);

fn listed_namespaces() -> String {
    let output = Command::new("ip").args(["netns", "list"]).output().expect("run ip netns list");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let listed = listed_namespaces();
    for name in names {
        assert!(
            !listed.lines().any(|line| line.split_whitespace().next() == Some(name)),
            "{name} still exists:\n{listed}"
        );
    }
}

#[test]
fn pods_should_reach_each_other_directly_over_tcp_and_udp() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    let pod2 = lab.add_pod("pod2");
    assert_eq!(pod1.ip().to_string(), "10.244.0.11");
    assert_eq!(pod2.ip().to_string(), "10.244.0.12");
    pod2.serve_tcp(8080);
    pod2.serve_udp(5301);

    let tcp = lab.tcp_request(pod1.netns(), pod2.address(8080), TIMEOUT).expect("TCP pod1 → pod2");
    assert_eq!(tcp, Reply { pod: "pod2".into(), peer: pod1.ip().into(), port: 8080 });
    let udp = lab.udp_request(pod1.netns(), pod2.address(5301), TIMEOUT).expect("UDP pod1 → pod2");
    assert_eq!(udp, Reply { pod: "pod2".into(), peer: pod1.ip().into(), port: 5301 });
}

#[test]
fn node_should_reach_pods_from_the_pod_gateway_address() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    let pod2 = lab.add_pod("pod2");
    pod1.serve_tcp(8080);
    pod2.serve_tcp(8080);
    for pod in [&pod1, &pod2] {
        let reply = lab.tcp_request(lab.node_netns(), pod.address(8080), TIMEOUT).expect("TCP node → pod");
        assert_eq!(reply, Reply { pod: pod.name().into(), peer: POD_GATEWAY.into(), port: 8080 });
    }
}

#[test]
fn closed_pod_port_should_be_refused_for_tcp_and_udp() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    let pod2 = lab.add_pod("pod2");
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let outcome = lab.request(pod1.netns(), protocol, pod2.address(9999), TIMEOUT);
        assert!(matches!(outcome, Err(ClientError::Refused)), "{protocol:?}: {outcome:?}");
    }
}

#[test]
fn cluster_ip_without_agent_should_time_out_at_the_gateway() {
    if !root_or_skip() {
        return;
    }
    // The node routes 10.96.0.0/16 to the gateway, which does not forward: without kproxy the
    // packet is dropped, so a Refused in the agent's tests really comes from kproxy.
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    let address: SocketAddr = "10.96.0.99:80".parse().unwrap();
    let started = Instant::now();
    let outcome = lab.tcp_request(pod1.netns(), address, Duration::from_millis(300));
    assert!(matches!(outcome, Err(ClientError::Timeout)), "{outcome:?} after {:?}", started.elapsed());
}

#[test]
fn servers_should_answer_many_connections_quickly() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let client = lab.add_pod("client");
    let pod1 = lab.add_pod("pod1");
    pod1.serve_tcp(8080);
    pod1.serve_udp(8080);
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let started = Instant::now();
        let tally = lab.tally(client.netns(), protocol, pod1.address(8080), 300, TIMEOUT);
        eprintln!("{protocol:?}: {tally} in {:?}", started.elapsed());
        assert_eq!(tally.count("pod1"), 300, "{tally}");
    }
}

#[test]
fn lab_should_remove_its_namespaces_when_dropped() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod1 = lab.add_pod("pod1");
    pod1.serve_tcp(8080);
    pod1.serve_udp(8080);
    let names = lab.namespaces();
    assert_eq!(names.len(), 3, "{names:?}");
    drop(lab);
    assert_gone(&names);
}

#[test]
fn lab_should_remove_its_namespaces_when_the_test_panics() {
    if !root_or_skip() {
        return;
    }
    let mut names = Vec::new();
    let outcome = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        let lab = Lab::new();
        let pod1 = lab.add_pod("pod1");
        pod1.serve_tcp(8080);
        names = lab.namespaces();
        panic!("a test failing on purpose while its lab is alive");
    }));
    assert!(outcome.is_err());
    assert_eq!(names.len(), 3, "{names:?}");
    assert_gone(&names);
}

#[test]
fn lab_should_keep_the_root_namespace_untouched() {
    if !root_or_skip() {
        return;
    }
    let before = Command::new("ip").args(["-o", "link"]).output().unwrap().stdout;
    let lab = Lab::new();
    let _pod = lab.add_pod("pod1");
    let during = Command::new("ip").args(["-o", "link"]).output().unwrap().stdout;
    // Other tests run in parallel, but none of them may add links to the root namespace either.
    let names = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .filter_map(|line| line.split(':').nth(1).map(|name| name.trim().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&before), names(&during));
}

/// A tiny hand-written ruleset in the shape the agent's contract describes (random DNAT,
/// hairpin masquerade, rejects for a Service without endpoints). It shows that what the agent
/// tests expect — peers, refusals — is what the kernel does in this topology, so a failing
/// agent test points at the agent, not at the lab.
const REFERENCE_RULES: &str = "
table ip reference {
  chain nat_prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }
  chain nat_output { type nat hook output priority -100; policy accept; jump services; }
  chain services {
    ip daddr 10.96.0.10 tcp dport 80 numgen random mod 2 vmap { 0 : goto endpoint1, 1 : goto endpoint2 }
  }
  chain endpoint1 { ip saddr 10.244.0.11 meta mark set mark or 0x4000; meta l4proto tcp dnat to 10.244.0.11:8080; }
  chain endpoint2 { ip saddr 10.244.0.12 meta mark set mark or 0x4000; meta l4proto tcp dnat to 10.244.0.12:8080; }
  chain nat_postrouting { type nat hook postrouting priority srcnat; policy accept; meta mark & 0x4000 == 0x4000 masquerade; }
  chain filter_forward { type filter hook forward priority filter; policy accept; jump no_endpoints; }
  chain filter_output { type filter hook output priority filter; policy accept; jump no_endpoints; }
  chain no_endpoints {
    ip daddr 10.96.0.31 tcp dport 80 reject with tcp reset
    ip daddr 10.96.0.31 udp dport 53 reject
  }
}
";

#[test]
fn lab_should_show_hairpin_masquerade_and_rejects_under_reference_rules() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pods = lab.add_pods(&["pod1", "pod2"]);
    let client = lab.add_pod("client");
    for pod in &pods {
        pod.serve_tcp(8080);
    }
    lab.nft_script(REFERENCE_RULES).expect_success();
    let service: SocketAddr = "10.96.0.10:80".parse().unwrap();

    let from_pod1 = lab.tally(pods[0].netns(), Protocol::Tcp, service, 40, TIMEOUT);
    eprintln!("from pod1: {from_pod1}");
    assert_eq!(from_pod1.failures(), 0, "{from_pod1}");
    for (pod, peer) in [("pod1", POD_GATEWAY), ("pod2", pods[0].ip())] {
        assert!(
            from_pod1.replies.contains_key(&(pod.to_owned(), peer.into(), 8080)),
            "{pod} saw {peer}? {from_pod1}"
        );
    }
    let from_node = lab.tally(lab.node_netns(), Protocol::Tcp, service, 20, TIMEOUT);
    assert_eq!(from_node.peers(), [kproxy_e2e::NODE_UPLINK_IP.into()].into(), "{from_node}");

    let empty_tcp: SocketAddr = "10.96.0.31:80".parse().unwrap();
    let empty_udp: SocketAddr = "10.96.0.31:53".parse().unwrap();
    for address in [empty_tcp, empty_udp] {
        let outcome = lab.request(
            client.netns(),
            if address.port() == 80 { Protocol::Tcp } else { Protocol::Udp },
            address,
            TIMEOUT,
        );
        assert!(matches!(outcome, Err(ClientError::Refused)), "{address}: {outcome:?}");
    }
    let outcome = lab.tcp_request(lab.node_netns(), empty_tcp, TIMEOUT);
    assert!(matches!(outcome, Err(ClientError::Refused)), "node TCP: {outcome:?}");
    // A reject in the sender's own output hook fails the send itself.
    let outcome = lab.udp_request(lab.node_netns(), empty_udp, TIMEOUT);
    assert!(matches!(outcome, Err(ClientError::Denied)), "node UDP: {outcome:?}");
}

#[test]
fn forwarder_should_carry_connections_from_the_node_namespace_and_go_down_on_request() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    if !kproxy_e2e::root_or_skip() {
        return;
    }
    let lab = kproxy_e2e::Lab::new();
    // An "API server" on the test's own loopback.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in upstream.incoming().flatten() {
            let _ = stream.write_all(b"hello from upstream\n");
        }
    });
    let forwarder = kproxy_e2e::forwarder::Forwarder::start(lab.node_netns(), 16443, upstream_address);
    let local = forwarder.local_address();
    let fetch = || {
        lab.run_in(lab.node_netns(), move || {
            let mut stream = TcpStream::connect_timeout(&local, std::time::Duration::from_secs(2))?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok::<_, std::io::Error>(text)
        })
    };
    assert_eq!(fetch().unwrap(), "hello from upstream\n");
    forwarder.take_down();
    assert!(fetch().map(|t| t.is_empty()).unwrap_or(true), "no answer while down");
    forwarder.bring_back();
    assert_eq!(fetch().unwrap(), "hello from upstream\n");
}

// === the routed lab: external client, second node, IPv6 ===

#[test]
fn external_client_should_reach_local_and_remote_pods_over_ipv4_and_ipv6() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let local = lab.add_pod("pod1");
    let remote = lab.add_remote_pod("rpod1");
    assert_eq!((local.node_name(), remote.node_name()), ("node1", "node2"));
    assert_eq!(remote.ip().to_string(), "10.244.2.11");
    assert_eq!(local.ip6().to_string(), "fd00:10:244::11");
    assert_eq!(remote.ip6().to_string(), "fd00:10:244:2::11");
    for pod in [&local, &remote] {
        pod.serve_tcp(8080);
        pod.serve_udp(5301);
        for (target, peer) in
            [(pod.address(8080), IpAddr::from(ext.ip())), (pod.address6(8080), IpAddr::from(ext.ip6()))]
        {
            let reply =
                lab.tcp_request(ext.netns(), target, TIMEOUT).unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(reply, Reply { pod: pod.name().into(), peer, port: 8080 }, "ext → {target}");
        }
        for target in [pod.address(5301), pod.address6(5301)] {
            let reply =
                lab.udp_request(ext.netns(), target, TIMEOUT).unwrap_or_else(|e| panic!("{target}: {e}"));
            assert_eq!(reply.pod, pod.name(), "ext → UDP {target}");
        }
    }
}

#[test]
fn remote_pod_should_reach_a_local_pod_directly_over_ipv4_and_ipv6() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let local = lab.add_pod("pod1");
    let remote = lab.add_remote_pod("rpod1");
    local.serve_tcp(8080);
    remote.serve_tcp(8080);
    for (from, to) in [(&remote, &local), (&local, &remote)] {
        let reply = lab.tcp_request(from.netns(), to.address(8080), TIMEOUT).expect("IPv4");
        assert_eq!(reply, Reply { pod: to.name().into(), peer: from.ip().into(), port: 8080 });
        let reply = lab.tcp_request(from.netns(), to.address6(8080), TIMEOUT).expect("IPv6");
        assert_eq!(reply, Reply { pod: to.name().into(), peer: from.ip6().into(), port: 8080 });
    }
    // The node reaches both, from its address on the way there.
    let reply = lab.tcp_request(lab.node_netns(), remote.address(8080), TIMEOUT).expect("node → remote");
    assert_eq!(reply.peer, IpAddr::from(NODE_LINK_IP));
    let reply = lab.tcp_request(lab.node_netns(), local.address6(8080), TIMEOUT).expect("node → local v6");
    assert_eq!(reply.peer, IpAddr::from(POD_GATEWAY6));
}

#[test]
fn external_client_should_send_from_each_of_its_addresses() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let pod1 = lab.add_pod("pod1");
    pod1.serve_tcp(8080);
    pod1.serve_udp(5301);
    let extras = ext.extra_ips();
    assert_eq!((extras.first().copied(), extras.len()), (Some("192.168.200.3".parse().unwrap()), 18));
    for source in [ext.ip(), extras[0], *extras.last().unwrap()] {
        let tcp = lab.tcp_request(ext.from(source), pod1.address(8080), TIMEOUT).expect("TCP");
        assert_eq!(tcp.peer, IpAddr::from(source));
        let udp = lab.udp_request(ext.from(source), pod1.address(5301), TIMEOUT).expect("UDP");
        assert_eq!(udp.peer, IpAddr::from(source));
    }
    // Without a chosen source, the primary address.
    let reply = lab.tcp_request(ext.netns(), pod1.address(8080), TIMEOUT).expect("TCP");
    assert_eq!(reply.peer, IpAddr::from(EXTERNAL_CLIENT_IP));
}

#[test]
fn uncaptured_external_and_routed_service_addresses_should_time_out_without_agent() {
    if !root_or_skip() {
        return;
    }
    // The gateway routes 203.0.113.0/24 (and, when a test asks, a Service CIDR) to the node;
    // without kproxy the node sends them back and the gateway drops them: a time-out, never a
    // routing loop's error, so an agent test can tell "not captured" cleanly.
    let lab = Lab::new();
    let ext = lab.add_external_client();
    lab.route_at_gateway_via_node("10.96.0.0/16");
    for target in ["203.0.113.10:80", "10.96.0.10:80"] {
        let target: SocketAddr = target.parse().unwrap();
        let outcome = lab.tcp_request(ext.netns(), target, Duration::from_millis(300));
        assert!(matches!(outcome, Err(ClientError::Timeout)), "{target}: {outcome:?}");
    }
    // The node's own addresses answer (no listener: refused), over both families.
    for target in [SocketAddr::from((NODE_UPLINK_IP, 30080)), SocketAddr::from((NODE_UPLINK_IP6, 30080))] {
        let outcome = lab.tcp_request(ext.netns(), target, TIMEOUT);
        assert!(matches!(outcome, Err(ClientError::Refused)), "{target}: {outcome:?}");
    }
}

/// A hand-written NodePort in the shape of the contract (DNAT at the node's addresses, random
/// endpoint, masquerade), for both families: it shows which peer addresses the pods see in this
/// topology, which the agent's external-traffic tests rely on.
const REFERENCE_NODE_PORT: &str = "
table inet reference {
  chain nat_prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 192.168.100.2 tcp dport 30080 meta mark set 0x4000 numgen random mod 2 vmap { 0 : goto local4, 1 : goto remote4 }
    ip6 daddr fd00:192:168:100::2 tcp dport 30080 meta mark set 0x4000 numgen random mod 2 vmap { 0 : goto local6, 1 : goto remote6 }
  }
  chain local4 { meta l4proto tcp dnat ip to 10.244.0.11:8080; }
  chain remote4 { meta l4proto tcp dnat ip to 10.244.2.11:8080; }
  chain local6 { meta l4proto tcp dnat ip6 to [fd00:10:244::11]:8080; }
  chain remote6 { meta l4proto tcp dnat ip6 to [fd00:10:244:2::11]:8080; }
  chain nat_postrouting { type nat hook postrouting priority srcnat; policy accept; meta mark & 0x4000 == 0x4000 masquerade; }
}
";

#[test]
fn lab_should_show_node_port_masquerade_peers_under_reference_rules() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let ext = lab.add_external_client();
    let local = lab.add_pod("pod1");
    let remote = lab.add_remote_pod("rpod1");
    for pod in [&local, &remote] {
        pod.serve_tcp(8080);
    }
    lab.nft_script(REFERENCE_NODE_PORT).expect_success();
    let expected4 = [("pod1", IpAddr::from(POD_GATEWAY)), ("rpod1", IpAddr::from(NODE_LINK_IP))];
    let expected6 = [("pod1", IpAddr::from(POD_GATEWAY6)), ("rpod1", IpAddr::from(NODE_LINK_IP6))];
    for (target, expected) in [
        (SocketAddr::from((NODE_UPLINK_IP, 30080)), expected4),
        (SocketAddr::from((NODE_UPLINK_IP6, 30080)), expected6),
    ] {
        let tally = lab.tally(ext.netns(), Protocol::Tcp, target, 40, TIMEOUT);
        eprintln!("{target}: {tally}");
        assert_eq!(tally.failures(), 0, "{tally}");
        for (pod, peer) in expected {
            assert!(tally.replies.contains_key(&(pod.to_owned(), peer, 8080)), "{pod} saw {peer}? {tally}");
        }
    }
}

#[test]
fn lab_should_remove_node2_and_the_external_client_when_dropped() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let _ext = lab.add_external_client();
    let remote = lab.add_remote_pod("rpod1");
    remote.serve_tcp(8080);
    let names = lab.namespaces();
    // node, gw, ext, node2, rpod1
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(lab.node2_netns().as_deref(), Some(names[3].as_str()));
    drop(lab);
    assert_gone(&names);
}
