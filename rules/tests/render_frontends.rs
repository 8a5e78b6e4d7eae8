//! The renderer for frontends beyond the ClusterIP and for the traffic policies: node ports,
//! external and load-balancer IPs, Local policies, source ranges, affinity, masquerading.

mod common;

use std::net::IpAddr;

use common::{plan, slice};
use k8s_openapi::api::core::v1 as core;
use kproxy_rules::model::{NodeContext, Protocol};
use kproxy_rules::nft::{self, ElementValue, Family, Ruleset, Statement, Table, Value, Verdict, names};

fn node() -> NodeContext {
    NodeContext {
        node_port_ips: vec!["192.168.10.2".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        ..NodeContext::new("node1")
    }
}

/// A Service from its spec as JSON, named `default/web`, with an optional status.
fn service(spec: serde_json::Value, status: serde_json::Value) -> core::Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"}, "spec": spec, "status": status,
    }))
    .unwrap()
}

fn web_slice(local: &[&str], remote: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let mut s = slice("web-1", "web", "IPv4", &[("http", 8080, "TCP")], &[]);
    for (node, ips) in [("node1", local), ("node2", remote)] {
        for ip in ips {
            s.endpoints.push(k8s_openapi::api::discovery::v1::Endpoint {
                addresses: vec![ip.to_string()],
                node_name: Some(node.into()),
                ..Default::default()
            });
        }
    }
    s
}

fn render(svc: core::Service, local: &[&str], remote: &[&str]) -> Ruleset {
    let ruleset = nft::render(&plan(&[svc], &[web_slice(local, remote)]), &node());
    ruleset.validate().expect("valid ruleset");
    ruleset
}

fn v4(ruleset: &Ruleset) -> &Table {
    ruleset.tables.iter().find(|t| t.id.family == Family::Ip).unwrap()
}

fn verdict_of(table: &Table, map: &str, key: Vec<Value>) -> Option<Verdict> {
    match &table.sets[map].elements.get(&key)?.value {
        Some(ElementValue::Verdict(v)) => Some(v.clone()),
        _ => None,
    }
}

fn addr(ip: &str, port: u16) -> Vec<Value> {
    vec![Value::Addr(ip.parse::<IpAddr>().unwrap()), Value::Proto(Protocol::Tcp), Value::Port(port)]
}

fn nodeport(port: u16) -> Vec<Value> {
    vec![Value::Proto(Protocol::Tcp), Value::Port(port)]
}

fn goto(chain: &str) -> Option<Verdict> {
    Some(Verdict::Goto(chain.into()))
}

#[test]
fn node_port_should_be_served_on_node_addresses_and_masqueraded_under_the_cluster_policy() {
    let svc = service(
        serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        serde_json::json!({}),
    );
    let ruleset = render(svc, &["10.244.1.5"], &["10.244.2.6"]);
    let t = v4(&ruleset);
    assert_eq!(verdict_of(t, names::SERVICE_NODEPORTS, nodeport(30080)), goto("pick-nodeport-tcp-2"));
    assert!(t.sets[names::MASQUERADE_NODEPORTS].elements.contains_key(&nodeport(30080)));
    assert!(
        t.sets[names::NODEPORT_IPS]
            .elements
            .contains_key(&vec![Value::Addr("192.168.10.2".parse().unwrap())])
    );
    assert_eq!(t.sets["nodeport-endpoints-tcp"].elements.len(), 2);
}

#[test]
fn external_local_policy_should_use_local_endpoints_and_short_circuit_pods_and_the_node() {
    let svc = service(
        serde_json::json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
            "externalIPs": ["203.0.113.20"], "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"ip": "203.0.113.11", "ipMode": "Proxy"}]}}),
    );
    let ruleset = render(svc, &["10.244.1.5"], &["10.244.2.6"]);
    let t = v4(&ruleset);
    let external = "external-default/web/tcp/http";
    for ip in ["203.0.113.10", "203.0.113.20"] {
        assert_eq!(verdict_of(t, names::SERVICE_IPS, addr(ip, 80)), goto(external));
        assert!(
            !t.sets[names::MASQUERADE_FRONTENDS].elements.contains_key(&addr(ip, 80)),
            "Local keeps the client address"
        );
    }
    assert_eq!(
        verdict_of(t, names::SERVICE_IPS, addr("203.0.113.11", 80)),
        None,
        "ipMode Proxy is not captured"
    );
    assert_eq!(
        verdict_of(t, names::SERVICE_NODEPORTS, nodeport(30080)),
        goto("nodeport-default/web/tcp/http")
    );
    let rules: Vec<&Vec<Statement>> = t.chains[external].rules.iter().map(|r| &r.statements).collect();
    assert!(matches!(rules[0][0], Statement::SaddrInPrefixes { negate: false, .. }), "pods first");
    assert_eq!(rules[0][1], Statement::Verdict(Verdict::Goto("pick-tcp-2".into())));
    assert_eq!(rules[1][0], Statement::FibSaddrLocal);
    assert_eq!(rules.last().unwrap()[0], Statement::Verdict(Verdict::Goto("pick-local-tcp-1".into())));
    // ClusterIP traffic is unaffected by the external policy.
    assert_eq!(verdict_of(t, names::SERVICE_IPS, addr("10.96.0.10", 80)), goto("pick-tcp-2"));
}

#[test]
fn local_policies_without_local_endpoints_should_drop_while_no_endpoints_at_all_rejects() {
    let svc = service(
        serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.10", "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        serde_json::json!({}),
    );
    let t = render(svc.clone(), &[], &["10.244.2.6"]);
    let t = v4(&t);
    assert_eq!(verdict_of(t, names::NO_ENDPOINT_SERVICES, addr("10.96.0.10", 80)), Some(Verdict::Drop));
    assert_eq!(verdict_of(t, names::NO_ENDPOINT_NODEPORTS, nodeport(30080)), Some(Verdict::Drop));
    let none = render(svc, &[], &[]);
    let none = v4(&none);
    let reject = goto(names::REJECT_CHAIN);
    assert_eq!(verdict_of(none, names::NO_ENDPOINT_SERVICES, addr("10.96.0.10", 80)), reject);
    assert_eq!(verdict_of(none, names::NO_ENDPOINT_NODEPORTS, nodeport(30080)), reject);
}

#[test]
fn source_ranges_should_guard_load_balancer_ips_only() {
    let svc = service(
        serde_json::json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "loadBalancerSourceRanges": ["192.168.200.2/32"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}),
    );
    let ruleset = render(svc, &["10.244.1.5"], &[]);
    let t = v4(&ruleset);
    let firewall = "firewall-default/web/tcp/http";
    assert_eq!(verdict_of(t, names::FIREWALL_IPS, addr("203.0.113.10", 80)), goto(firewall));
    assert_eq!(t.sets[names::FIREWALL_IPS].elements.len(), 1, "node ports bypass the ranges");
    assert!(
        matches!(&t.chains[firewall].rules[0].statements[0], Statement::SaddrInPrefixes { negate: true, prefixes } if prefixes.len() == 1)
    );
}

#[test]
fn client_ip_affinity_should_use_an_affinity_set_and_chain_per_endpoint() {
    let svc = service(
        serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        serde_json::json!({}),
    );
    let ruleset = render(svc, &["10.244.1.5"], &["10.244.2.6"]);
    let t = v4(&ruleset);
    let service_chain = "service-default/web/tcp/http";
    assert_eq!(verdict_of(t, names::SERVICE_IPS, addr("10.96.0.10", 80)), goto(service_chain));
    assert_eq!(verdict_of(t, names::SERVICE_NODEPORTS, nodeport(30080)), goto(service_chain));
    let set = "affinity-default/web/tcp/http__10.244.1.5/8080";
    assert_eq!(t.sets[set].decl.timeout, Some(30));
    let rules = &t.chains[service_chain].rules;
    assert_eq!(rules.len(), 3, "two affinity checks, then the random pick");
    assert!(matches!(&rules[2].statements[0], Statement::NumgenVmap { chains } if chains.len() == 2));
    let endpoint = &t.chains["endpoint-default/web/tcp/http__10.244.1.5/8080"].rules;
    assert!(matches!(&endpoint[0].statements[0], Statement::UpdateSet { set: s, .. } if s == set));
}

#[test]
fn cluster_cidr_should_masquerade_off_cluster_sources_to_cluster_ips_and_masquerade_all_everything() {
    let svc = service(
        serde_json::json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}),
        serde_json::json!({}),
    );
    let ports = plan(&[svc], &[web_slice(&["10.244.1.5"], &[])]);
    let with_cidr = nft::render(&ports, &node());
    let first = &v4(&with_cidr).chains[names::SERVICES].rules[0].statements;
    assert!(matches!(&first[1], Statement::SaddrInPrefixes { negate: true, .. }), "{first:?}");
    let all = nft::render(&ports, &NodeContext { masquerade_all: true, ..node() });
    let first = &v4(&all).chains[names::SERVICES].rules[0].statements;
    assert_eq!(first.len(), 2, "cluster IPs, then mark: {first:?}");
    let plain = nft::render(&ports, &NodeContext::new("node1"));
    assert!(
        !matches!(&v4(&plain).chains[names::SERVICES].rules[0].statements[0], Statement::InSet { set, .. } if set == names::CLUSTER_IPS)
    );
}

#[test]
fn rendered_frontends_should_still_diff_incrementally() {
    let svc = |affinity: bool| {
        service(
            serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.10", "sessionAffinity": if affinity { "ClientIP" } else { "None" },
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            serde_json::json!({}),
        )
    };
    let a = render(svc(false), &["10.244.1.5"], &[]);
    let b = render(svc(true), &["10.244.1.5", "10.244.1.6"], &[]);
    let update = nft::diff(&a, &b).unwrap();
    let after = a.apply(&update.changes).and_then(|r| r.apply(&update.cleanup)).unwrap();
    assert_eq!(after, b);
}

fn scheduled(scheduler: &str) -> core::Service {
    let mut svc = service(
        serde_json::json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        serde_json::json!({}),
    );
    svc.metadata.annotations = Some([("kproxy.io/scheduler".to_string(), scheduler.to_string())].into());
    svc
}

#[test]
fn round_robin_should_give_each_service_port_its_own_counter() {
    let ruleset = render(scheduled("rr"), &["10.244.1.5", "10.244.1.6", "10.244.1.7"], &[]);
    let t = v4(&ruleset);
    let chain = "rr-default/web/tcp/http";
    assert_eq!(verdict_of(t, names::SERVICE_IPS, addr("10.96.0.10", 80)), goto(chain));
    assert_eq!(
        verdict_of(t, names::SERVICE_NODEPORTS, nodeport(30080)),
        goto("rr-nodeport-default/web/tcp/http")
    );
    let Statement::DnatMap { key, .. } = &t.chains[chain].rules[0].statements[1] else { panic!("dnat") };
    assert_eq!(key.last(), Some(&nft::Expr::NumgenInc { modulus: 3 }));
}

#[test]
fn source_hash_should_hash_the_client_address_with_the_cluster_wide_seed() {
    let ruleset = render(scheduled("sh"), &["10.244.1.5", "10.244.1.6"], &[]);
    let t = v4(&ruleset);
    assert_eq!(verdict_of(t, names::SERVICE_IPS, addr("10.96.0.10", 80)), goto("pick-sh-tcp-2"));
    let Statement::DnatMap { key, .. } = &t.chains["pick-sh-tcp-2"].rules[0].statements[1] else {
        panic!("dnat")
    };
    assert_eq!(key.last(), Some(&nft::Expr::SaddrHash { modulus: 2, seed: kproxy_rules::sched::HASH_SEED }));
}

#[test]
fn maglev_should_program_its_lookup_table_as_slots() {
    let ruleset = render(scheduled("maglev"), &["10.244.1.5", "10.244.1.6", "10.244.1.7"], &[]);
    let t = v4(&ruleset);
    assert_eq!(verdict_of(t, names::SERVICE_IPS, addr("10.96.0.10", 80)), goto("pick-maglev-tcp-509"));
    let slots = t.sets["endpoints-tcp"]
        .elements
        .keys()
        .filter(|k| k[0] == Value::Addr("10.96.0.10".parse().unwrap()))
        .count();
    assert_eq!(slots, 509, "a prime above 100 x 3 endpoints");
    assert_eq!(t.sets["nodeport-endpoints-tcp"].elements.len(), 509);
}

#[test]
fn unknown_scheduler_should_warn_and_fall_back_to_the_default() {
    let svc = scheduled("lc");
    let Ok(kproxy_rules::k8s::Converted::Accepted(model)) = kproxy_rules::k8s::service(&svc) else {
        panic!("accepted")
    };
    assert_eq!(model.ports[0].service.scheduler, None);
    assert!(model.warnings[0].contains("\"lc\" is not a scheduler"), "{:?}", model.warnings);
    let ruleset = render(svc, &["10.244.1.5", "10.244.1.6"], &[]);
    assert_eq!(verdict_of(v4(&ruleset), names::SERVICE_IPS, addr("10.96.0.10", 80)), goto("pick-tcp-2"));
}
