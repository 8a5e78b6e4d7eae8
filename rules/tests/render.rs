//! The renderer's contract, checked on the typed ruleset it produces.

mod common;

use common::{READY, node, plan, service, slice};
use kproxy_rules::nft::{self, ElementValue, Family, Ruleset, Table, Transaction, Value, Verdict, names};

fn table(ruleset: &Ruleset, family: Family) -> &Table {
    ruleset.tables.iter().find(|t| t.id.family == family).expect("table of family")
}

fn verdict_of(table: &Table, map: &str, key: &[Value]) -> Option<Verdict> {
    match &table.sets[map].elements.get(key)?.value {
        Some(ElementValue::Verdict(v)) => Some(v.clone()),
        _ => None,
    }
}

fn frontend(ip: &str, protocol: &str, port: u16) -> Vec<Value> {
    let protocol = match protocol {
        "tcp" => kproxy_rules::model::Protocol::Tcp,
        "udp" => kproxy_rules::model::Protocol::Udp,
        _ => kproxy_rules::model::Protocol::Sctp,
    };
    vec![Value::Addr(ip.parse().unwrap()), Value::Proto(protocol), Value::Port(port)]
}

#[test]
fn render_should_dispatch_a_frontend_to_the_pick_chain_of_its_endpoint_count() {
    let ports = plan(
        &[service("web", &["10.96.0.10"], &[("http", 80, "TCP")])],
        &[slice(
            "web-1",
            "web",
            "IPv4",
            &[("http", 8080, "TCP")],
            &[("10.244.0.11", READY), ("10.244.0.12", READY), ("10.244.0.13", READY)],
        )],
    );
    let ruleset = nft::render(&ports, &node());
    ruleset.validate().unwrap();
    let v4 = table(&ruleset, Family::Ip);
    let key = frontend("10.96.0.10", "tcp", 80);
    assert_eq!(verdict_of(v4, names::SERVICE_IPS, &key), Some(Verdict::Goto("pick-tcp-3".into())));
    assert!(v4.chains.contains_key("pick-tcp-3"));
    let slots: Vec<(u32, String)> = v4.sets["endpoints-tcp"]
        .elements
        .iter()
        .map(|(k, e)| {
            let Value::Int(slot) = k[3] else { panic!("slot") };
            let Some(ElementValue::Data(d)) = &e.value else { panic!("data") };
            let (Value::Addr(a), Value::Port(p)) = (d[0], d[1]) else { panic!("addr . port") };
            (slot, format!("{a}:{p}"))
        })
        .collect();
    assert_eq!(
        slots,
        [(0, "10.244.0.11:8080".into()), (1, "10.244.0.12:8080".into()), (2, "10.244.0.13:8080".into())]
    );
    assert_eq!(v4.sets[names::HAIRPIN].elements.len(), 3);
}

#[test]
fn render_should_reject_frontends_without_usable_endpoints() {
    let not_ready = (false, false, false);
    let ports = plan(
        &[
            service("empty", &["10.96.0.20"], &[("", 80, "TCP")]),
            service("down", &["10.96.0.21"], &[("", 80, "TCP")]),
        ],
        &[slice("down-1", "down", "IPv4", &[("", 8080, "TCP")], &[("10.244.0.11", not_ready)])],
    );
    let ruleset = nft::render(&ports, &node());
    let v4 = table(&ruleset, Family::Ip);
    for ip in ["10.96.0.20", "10.96.0.21"] {
        let key = frontend(ip, "tcp", 80);
        assert_eq!(
            verdict_of(v4, names::NO_ENDPOINT_SERVICES, &key),
            Some(Verdict::Goto(names::REJECT_CHAIN.into()))
        );
        assert_eq!(verdict_of(v4, names::SERVICE_IPS, &key), None);
    }
    assert!(
        v4.sets[names::CLUSTER_IPS].elements.contains_key(&vec![Value::Addr("10.96.0.21".parse().unwrap())])
    );
}

#[test]
fn render_should_send_the_same_port_on_tcp_and_udp_to_different_target_ports() {
    let ports = plan(
        &[service("dns", &["10.96.0.53"], &[("dns-tcp", 53, "TCP"), ("dns", 53, "UDP")])],
        &[slice(
            "dns-1",
            "dns",
            "IPv4",
            &[("dns-tcp", 5300, "TCP"), ("dns", 5301, "UDP")],
            &[("10.244.0.11", READY)],
        )],
    );
    let ruleset = nft::render(&ports, &node());
    let v4 = table(&ruleset, Family::Ip);
    let data = |map: &str| v4.sets[map].elements.values().next().and_then(|e| e.value.clone());
    let port =
        |p| Some(ElementValue::Data(vec![Value::Addr("10.244.0.11".parse().unwrap()), Value::Port(p)]));
    assert_eq!(data("endpoints-tcp"), port(5300));
    assert_eq!(data("endpoints-udp"), port(5301));
    assert!(v4.chains.contains_key("pick-tcp-1") && v4.chains.contains_key("pick-udp-1"));
}

#[test]
fn render_should_program_each_family_of_a_dual_stack_service_in_its_own_table() {
    let ports = plan(
        &[service("web", &["10.96.0.10", "fd00:96::10"], &[("http", 80, "TCP")])],
        &[
            slice("web-v4", "web", "IPv4", &[("http", 8080, "TCP")], &[("10.244.0.11", READY)]),
            slice(
                "web-v6",
                "web",
                "IPv6",
                &[("http", 8080, "TCP")],
                &[("fd00:244::11", READY), ("fd00:244::12", READY)],
            ),
        ],
    );
    let ruleset = nft::render(&ports, &node());
    ruleset.validate().unwrap();
    let v6 = table(&ruleset, Family::Ip6);
    assert_eq!(
        verdict_of(v6, names::SERVICE_IPS, &frontend("fd00:96::10", "tcp", 80)),
        Some(Verdict::Goto("pick-tcp-2".into()))
    );
    assert_eq!(
        verdict_of(table(&ruleset, Family::Ip), names::SERVICE_IPS, &frontend("10.96.0.10", "tcp", 80)),
        Some(Verdict::Goto("pick-tcp-1".into()))
    );
}

#[test]
fn transaction_should_replace_each_table_atomically_and_declare_before_use() {
    let ports = plan(
        &[service("web", &["10.96.0.10"], &[("http", 80, "TCP")])],
        &[slice("web-1", "web", "IPv4", &[("http", 8080, "TCP")], &[("10.244.0.11", READY)])],
    );
    let text = Transaction::replace(&nft::render(&ports, &node())).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            "add table ip kproxy",
            "delete table ip kproxy",
            "add table ip kproxy { comment \"kproxy rules for node node1\"; }"
        ]
    );
    let first = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).unwrap();
    assert!(first("add chain ip kproxy pick-tcp-1") < first("add element ip kproxy service-ips"));
    assert!(first("add map ip kproxy endpoints-tcp") < first("add rule ip kproxy pick-tcp-1"));
    assert!(text.contains(
        "add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 comment \"default/web:http\" : goto pick-tcp-1 }"
    ));
    assert!(text.contains("add rule ip kproxy pick-tcp-1 meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @endpoints-tcp"));
}
