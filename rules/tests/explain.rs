//! Packet-case tables through `explain`: the tracer over the rendered IR, one row per
//! behaviour of reference/kube-proxy.md §2.

mod common;

use std::net::SocketAddr;

use common::plan;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kproxy_rules::explain::{Outcome, Packet, explain, jhash_slot};
use kproxy_rules::model::{NodeContext, Protocol};
use kproxy_rules::nft::{self, Ruleset};

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn service(
    name: &str,
    spec: serde_json::Value,
    status: serde_json::Value,
    scheduler: Option<&str>,
) -> core::Service {
    let annotations =
        scheduler.map(|s| serde_json::json!({"kproxy.io/scheduler": s})).unwrap_or(serde_json::json!({}));
    object(
        serde_json::json!({"metadata": {"name": name, "namespace": "default", "annotations": annotations}, "spec": spec, "status": status}),
    )
}

fn slice(service: &str, endpoints: &[(&str, &str)]) -> discovery::EndpointSlice {
    object(serde_json::json!({
        "metadata": {"name": format!("{service}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints.iter().map(|(ip, node)| serde_json::json!({"addresses": [ip], "nodeName": node})).collect::<Vec<_>>(),
    }))
}

fn cluster() -> Ruleset {
    let http = |extra: serde_json::Value| {
        let mut spec = serde_json::json!({"ports": [{"name": "http", "port": 80, "nodePort": 30080}]});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        spec
    };
    let services = [
        service("web", http(serde_json::json!({"clusterIP": "10.96.0.1"})), serde_json::json!({}), None),
        service("empty", http(serde_json::json!({"clusterIP": "10.96.0.2"})), serde_json::json!({}), None),
        service(
            "internal",
            http(serde_json::json!({"clusterIP": "10.96.0.3", "internalTrafficPolicy": "Local"})),
            serde_json::json!({}),
            None,
        ),
        service(
            "lb",
            http(
                serde_json::json!({"type": "LoadBalancer", "clusterIP": "10.96.0.4", "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": ["192.168.200.0/28"], "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
            ),
            serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}),
            None,
        ),
        service(
            "np",
            http(
                serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80, "nodePort": 30082}]}),
            ),
            serde_json::json!({}),
            None,
        ),
        service(
            "hashed",
            http(serde_json::json!({"clusterIP": "10.96.0.6"})),
            serde_json::json!({}),
            Some("sh"),
        ),
        service(
            "sticky",
            http(serde_json::json!({"clusterIP": "10.96.0.7", "sessionAffinity": "ClientIP"})),
            serde_json::json!({}),
            None,
        ),
    ];
    let three = [("10.244.1.1", "node1"), ("10.244.2.2", "node2"), ("10.244.2.3", "node2")];
    let slices = [
        slice("web", &three),
        slice("internal", &[("10.244.2.2", "node2")]),
        slice("lb", &three),
        slice("np", &three),
        slice("hashed", &three),
        slice("sticky", &three),
    ];
    let node = NodeContext {
        node_port_ips: vec!["192.168.100.2".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..NodeContext::new("node1")
    };
    nft::render(&plan(&services, &slices), &node)
}

fn packet(source: Option<&str>, destination: &str, port: u16, from_node: bool) -> Packet {
    Packet {
        source: source.map(|s| s.parse().unwrap()),
        destination: destination.parse().unwrap(),
        protocol: Protocol::Tcp,
        port,
        from_node,
    }
}

/// Endpoint addresses with their chance in percent, or the outcome's name.
type Landing = Vec<(String, u32)>;

/// (name, packet, expected landing, masquerade)
type Case = (&'static str, Packet, Landing, bool);

fn endpoints(outcome: &Outcome) -> Landing {
    match outcome {
        Outcome::Endpoints(c) => {
            c.iter().map(|c| (c.endpoint.ip().to_string(), (c.probability * 100.0).round() as u32)).collect()
        }
        other => vec![(format!("{other:?}"), 0)],
    }
}

#[test]
fn explain_should_trace_every_packet_case_like_the_kernel() {
    let ruleset = cluster();
    let all =
        vec![("10.244.1.1".to_string(), 33), ("10.244.2.2".to_string(), 33), ("10.244.2.3".to_string(), 33)];
    let local = vec![("10.244.1.1".to_string(), 100)];
    let reject = vec![("Reject".to_string(), 0)];
    let drop = vec![("Drop".to_string(), 0)];
    let cases: Vec<Case> = vec![
        (
            "pod to ClusterIP: each endpoint 1/3",
            packet(Some("10.244.1.9"), "10.96.0.1", 80, false),
            all.clone(),
            false,
        ),
        (
            "node to ClusterIP: not from the pod network, masqueraded",
            packet(None, "10.96.0.1", 80, true),
            all.clone(),
            true,
        ),
        (
            "off-cluster client to ClusterIP is masqueraded",
            packet(Some("192.168.200.2"), "10.96.0.1", 80, false),
            all.clone(),
            true,
        ),
        (
            "ClusterIP on a port it does not serve",
            packet(Some("10.244.1.9"), "10.96.0.1", 81, false),
            reject.clone(),
            false,
        ),
        ("no endpoints", packet(Some("10.244.1.9"), "10.96.0.2", 80, false), reject.clone(), false),
        (
            "internalTrafficPolicy Local without a local endpoint",
            packet(Some("10.244.1.9"), "10.96.0.3", 80, false),
            drop.clone(),
            false,
        ),
        (
            "NodePort from outside, Cluster policy: masqueraded",
            packet(Some("192.168.200.2"), "192.168.100.2", 30082, false),
            all.clone(),
            true,
        ),
        (
            "LB IP from outside, Local policy: local endpoints, client kept",
            packet(Some("192.168.200.2"), "203.0.113.10", 80, false),
            local.clone(),
            false,
        ),
        (
            "LB IP from a pod outside the source ranges: dropped too",
            packet(Some("10.244.1.9"), "203.0.113.10", 80, false),
            drop.clone(),
            false,
        ),
        (
            "Local-policy NodePort from a pod: short-circuit to Cluster",
            packet(Some("10.244.1.9"), "192.168.100.2", 30081, false),
            vec![],
            false,
        ),
        (
            "LB IP from the node, outside the source ranges",
            packet(None, "203.0.113.10", 80, true),
            drop.clone(),
            false,
        ),
        (
            "Local-policy NodePort from the node: Cluster, masqueraded",
            packet(None, "192.168.100.2", 30081, true),
            all.clone(),
            true,
        ),
        (
            "LB IP from outside the source ranges",
            packet(Some("192.168.201.2"), "203.0.113.10", 80, false),
            drop.clone(),
            false,
        ),
        (
            "NodePort of the LB bypasses the source ranges",
            packet(Some("192.168.201.2"), "192.168.100.2", 30081, false),
            local.clone(),
            false,
        ),
        (
            "an address kproxy does not serve",
            packet(Some("10.244.1.9"), "10.96.9.9", 80, false),
            vec![("NotAService".to_string(), 0)],
            false,
        ),
    ];
    for (name, packet, expected, masquerade) in cases {
        let explanation = explain(&ruleset, &packet).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = endpoints(&explanation.outcome);
        if expected.is_empty() {
            // The pod short-circuit: every endpoint, through the source-range check first.
            assert_eq!(got.len(), 3, "{name}: {explanation}");
        } else {
            assert_eq!(got, expected, "{name}:\n{explanation}");
        }
        assert_eq!(explanation.masquerade, masquerade, "{name}:\n{explanation}");
    }
}

#[test]
fn explain_should_name_the_endpoint_a_client_hashes_to() {
    let ruleset = cluster();
    let client = "10.244.1.9";
    let explanation = explain(&ruleset, &packet(Some(client), "10.96.0.6", 80, false)).unwrap();
    let Outcome::Endpoints(c) = &explanation.outcome else { panic!("{explanation}") };
    assert_eq!(c.len(), 1, "{explanation}");
    let slot = jhash_slot(client.parse().unwrap(), kproxy_rules::sched::HASH_SEED, 3);
    let expected = ["10.244.1.1", "10.244.2.2", "10.244.2.3"][slot as usize];
    assert_eq!(c[0].endpoint, format!("{expected}:8080").parse::<SocketAddr>().unwrap());
    let unknown = explain(&ruleset, &packet(None, "10.96.0.6", 80, true)).unwrap();
    assert!(unknown.selection.unwrap().contains("--from"));
}

#[test]
fn explain_should_show_the_iptables_cascade_and_affinity() {
    let ruleset = cluster();
    let text = explain(&ruleset, &packet(Some("10.244.1.9"), "10.96.0.1", 80, false)).unwrap().to_string();
    for p in ["0.3333", "0.5000", "1.0000"] {
        assert!(text.contains(p), "{text}");
    }
    let sticky = explain(&ruleset, &packet(Some("10.244.1.9"), "10.96.0.7", 80, false)).unwrap();
    assert!(sticky.selection.unwrap().contains("session affinity"));
    assert_eq!(endpoints(&sticky.outcome).len(), 3);
}

#[test]
fn jhash_slot_should_stay_within_its_modulus_and_tell_clients_apart() {
    // The hash itself is checked against lookup3's test vectors (rules/src/explain.rs) and
    // against the kernel in tests/tests/schedulers.rs.
    let slot = |ip: &str, seed, n| jhash_slot(ip.parse().unwrap(), seed, n);
    assert!(slot("10.0.0.1", 0, 7) < 7);
    assert_ne!(slot("10.0.0.1", 1, 1000), slot("10.0.0.2", 1, 1000));
}
