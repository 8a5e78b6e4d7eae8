//! The differ's contract: applying `diff(a, b)` to `a` gives exactly `b` under the kernel's
//! rules, `diff(a, a)` is empty, and a steady-state change costs a few element operations.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::{READY, node, plan, service, slice};
use kproxy_rules::model::{
    Conditions, Endpoint, Protocol, ServiceInfo, ServiceName, ServicePort, ServicePortEndpoints,
    ServicePortName,
};
use kproxy_rules::nft::{self, Inventory, Operation, Ruleset, Transaction};
use proptest::prelude::*;

fn service_port() -> impl Strategy<Value = ServicePortEndpoints> {
    let endpoint =
        (0u8..12, prop_oneof![Just(8080u16), Just(9090)], any::<(bool, bool, bool)>(), any::<bool>())
            .prop_map(|(host, port, (ready, serving, terminating), v6)| Endpoint {
                address: if v6 {
                    format!("fd00::{host}").parse().unwrap()
                } else {
                    format!("10.244.0.{host}").parse().unwrap()
                },
                port,
                conditions: Conditions { ready, serving, terminating },
                node_name: None,
                zone: None,
                hints: Default::default(),
            });
    (
        0u8..6,
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)],
        prop_oneof![Just(80u16), Just(53)],
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(30u32), Just(10800)]),
        proptest::collection::vec(endpoint, 0..6),
    )
        .prop_map(|(svc, protocol, port, dual, affinity_timeout, endpoints)| {
            let mut ips: Vec<IpAddr> = vec![format!("10.96.0.{svc}").parse().unwrap()];
            if dual {
                ips.push(format!("fd00:96::{svc}").parse().unwrap());
            }
            let mut endpoints = endpoints;
            endpoints.sort();
            endpoints.dedup_by(|a, b| a.address == b.address && a.port == b.port);
            ServicePortEndpoints {
                port: ServicePort {
                    name: ServicePortName {
                        service: ServiceName { namespace: "default".into(), name: format!("svc{svc}") },
                        port: format!("{protocol}-{port}"),
                        protocol,
                    },
                    port,
                    node_port: None,
                    service: Arc::new(ServiceInfo {
                        cluster_ips: ips,
                        affinity_timeout,
                        ..ServiceInfo::default()
                    }),
                },
                endpoints,
            }
        })
}

fn cluster() -> impl Strategy<Value = Ruleset> {
    proptest::collection::vec(service_port(), 0..8).prop_map(|mut ports| {
        ports.sort_by(|a, b| a.port.name.cmp(&b.port.name));
        ports.dedup_by(|a, b| {
            a.port.name.service == b.port.name.service
                && (a.port.port, a.port.name.protocol) == (b.port.port, b.port.name.protocol)
                || a.port.name == b.port.name
        });
        nft::render(&ports, &node())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn diff_applied_to_a_should_give_exactly_b(a in cluster(), b in cluster()) {
        let update = nft::diff(&a, &b).expect("rulesets of one node always diff");
        let after_changes = a.apply(&update.changes).map_err(|e| TestCaseError::fail(format!("{e}\n{}", update.changes)))?;
        let after_cleanup = after_changes.apply(&update.cleanup).map_err(|e| TestCaseError::fail(format!("{e}\n{}", update.cleanup)))?;
        prop_assert_eq!(after_cleanup, b);
    }

    #[test]
    fn diff_of_a_ruleset_with_itself_should_be_empty(a in cluster()) {
        prop_assert!(nft::diff(&a, &a).expect("same node").is_empty());
    }

    #[test]
    fn full_replace_should_give_exactly_the_ruleset(a in cluster(), b in cluster()) {
        prop_assert_eq!(a.apply(&Transaction::replace(&b)).map_err(|e| TestCaseError::fail(e.to_string()))?, b);
    }
}

#[test]
fn rewrite_should_keep_what_the_datapath_wrote_to_affinity_sets_and_drop_tables_no_longer_planned() {
    let svc = service("web", &["10.96.0.10", "fd00:96::10"], &[("http", 80, "TCP")]);
    let mut svc = svc;
    let spec = svc.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    let eps = [slice("web-1", "web", "IPv4", &[("http", 8080, "TCP")], &[("10.244.0.11", READY)])];
    let planned = nft::render(&plan(std::slice::from_ref(&svc), &eps), &node());
    let v4 = &planned.tables[0];
    let affinity = v4.sets.values().find(|s| s.decl.timeout.is_some()).expect("an affinity set");
    let client = vec![nft::Value::Addr("192.0.2.7".parse().unwrap())];
    let entry = nft::Element { value: None, comment: None };
    let mut learned = Transaction::default();
    learned.push(Operation::AddElements {
        table: v4.id.clone(),
        set: affinity.decl.name.clone(),
        elements: vec![(&client, &entry)],
    });
    let kernel = planned.apply(&learned).unwrap();

    let mut one_family = planned.clone();
    one_family.tables.truncate(1);
    let existing: Vec<Inventory> = kernel.tables.iter().map(Inventory::of).collect();
    let update = Transaction::rewrite(&one_family, &existing);
    let text = update.changes.to_string();
    assert!(text.starts_with("delete table ip6 kproxy\n"), "{text}");
    assert!(text.contains("flush table ip kproxy\n"), "{text}");
    assert!(!text.contains(&format!("flush set ip kproxy {}", affinity.decl.name)), "{text}");
    let after = kernel.apply(&update.changes).unwrap().apply(&update.cleanup).unwrap();
    assert_eq!(after.tables.len(), 1);
    assert!(after.tables[0].sets[&affinity.decl.name].elements.contains_key(&client), "the entry stays");

    let replaced = kernel.apply(&Transaction::replace(&one_family)).unwrap();
    let v4_replaced = replaced.tables.iter().find(|t| t.id == v4.id).unwrap();
    assert!(v4_replaced.sets[&affinity.decl.name].elements.is_empty(), "replace starts afresh");
}

/// The ruleset of Service `web` with ClientIP affinity of `seconds` and one endpoint.
fn with_affinity_timeout(seconds: i32) -> Ruleset {
    let mut svc = service("web", &["10.96.0.10"], &[("http", 80, "TCP")]);
    let spec = svc.spec.as_mut().unwrap();
    spec.session_affinity = Some("ClientIP".into());
    spec.session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
        client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig { timeout_seconds: Some(seconds) }),
    });
    let eps = [slice("web-1", "web", "IPv4", &[("http", 8080, "TCP")], &[("10.244.0.11", READY)])];
    nft::render(&plan(&[svc], &eps), &node())
}

#[test]
fn a_rewrite_should_redeclare_an_affinity_set_whose_timeout_changed() {
    let (kernel, desired) = (with_affinity_timeout(30), with_affinity_timeout(600));
    let existing: Vec<Inventory> = kernel.tables.iter().map(Inventory::of).collect();
    let update = Transaction::rewrite(&desired, &existing);
    let text = update.changes.to_string();
    let set = "affinity-default/web/tcp/http__10.244.0.11/8080";
    let deleted = text.find(&format!("delete set ip kproxy {set}\n")).expect(&text);
    assert!(text.find("flush table ip kproxy\n").expect(&text) < deleted, "rules flushed first:\n{text}");
    let rewritten = kernel.apply(&update.changes).and_then(|r| r.apply(&update.cleanup)).unwrap();
    assert_eq!(rewritten, desired);
}

#[test]
fn a_new_affinity_timeout_should_redeclare_the_set_without_a_full_sync() {
    let (before, after) = (with_affinity_timeout(30), with_affinity_timeout(600));
    let update = nft::diff(&before, &after).expect("a set declared otherwise is diffed");
    let text = update.changes.to_string();
    let set = "affinity-default/web/tcp/http__10.244.0.11/8080";
    let deleted = text.find(&format!("delete set ip kproxy {set}\n")).expect(&text);
    let flushed =
        text.find("flush chain ip kproxy endpoint-default/web/tcp/http__10.244.0.11/8080").expect(&text);
    assert!(flushed < deleted, "the chains using the set are flushed first:\n{text}");
    assert!(text.contains("timeout 600s"), "{text}");
    let applied = before.apply(&update.changes).and_then(|r| r.apply(&update.cleanup)).unwrap();
    assert_eq!(applied, after);
}

#[test]
fn one_endpoint_change_should_cost_a_few_element_operations() {
    let eps = [("10.244.0.11", READY), ("10.244.0.12", READY), ("10.244.0.13", READY)];
    let services: Vec<_> = (0..50)
        .map(|i| service(&format!("s{i}"), &[&format!("10.96.1.{i}")], &[("http", 80, "TCP")]))
        .collect();
    let slices = |eps: &[common::Ep<'_>]| -> Vec<_> {
        (0..50)
            .map(|i| {
                slice(
                    &format!("s{i}-1"),
                    &format!("s{i}"),
                    "IPv4",
                    &[("http", 8080, "TCP")],
                    if i == 7 { eps } else { &[("10.244.0.11", READY)] },
                )
            })
            .collect()
    };
    let before = nft::render(&plan(&services, &slices(&eps)), &node());
    let mut changed = eps;
    changed[1] = ("10.244.0.22", READY);
    let after = nft::render(&plan(&services, &slices(&changed)), &node());
    let update = nft::diff(&before, &after).unwrap();
    println!("{}", update.changes);
    assert!(update.cleanup.is_empty());
    assert!(
        update
            .changes
            .operations()
            .iter()
            .all(|op| matches!(op, Operation::AddElements { .. } | Operation::DeleteElements { .. }))
    );
    // Slots follow address order, so the slots of the changed Service from the replaced one on
    // move (here 2 deleted and 2 added), plus the hairpin pairs of the old and the new endpoint:
    // proportional to the Service that changed, never to the cluster.
    let text = update.changes.to_string();
    assert!(
        text.lines()
            .filter(|l| l.contains("endpoints-tcp"))
            .all(|l| !l.contains("10.96.1.")
                || l.matches("10.96.1.7 ").count() == l.matches("10.96.1.").count()),
        "{text}"
    );
    assert_eq!(update.changes.element_count(), 6, "{text}");
}

#[test]
fn scaling_down_should_repoint_the_frontend_and_retire_the_unused_pick_chain() {
    let svc = [service("web", &["10.96.0.10"], &[("http", 80, "TCP")])];
    let three = [slice(
        "web-1",
        "web",
        "IPv4",
        &[("http", 8080, "TCP")],
        &[("10.244.0.11", READY), ("10.244.0.12", READY), ("10.244.0.13", READY)],
    )];
    let two = [slice(
        "web-1",
        "web",
        "IPv4",
        &[("http", 8080, "TCP")],
        &[("10.244.0.11", READY), ("10.244.0.12", READY)],
    )];
    let before = nft::render(&plan(&svc, &three), &node());
    let after = nft::render(&plan(&svc, &two), &node());
    let update = nft::diff(&before, &after).unwrap();
    let text = update.changes.to_string();
    assert!(text.contains("add element ip kproxy service-ips { 10.96.0.10 . tcp . 80 comment \"default/web:http\" : goto pick-tcp-2 }"), "{text}");
    assert!(text.contains("flush chain ip kproxy pick-tcp-3"), "{text}");
    assert_eq!(update.cleanup.to_string(), "delete chain ip kproxy pick-tcp-3\n");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rewrite_then_cleanup_should_give_exactly_the_desired_ruleset(a in cluster(), b in cluster()) {
        let existing: Vec<Inventory> = a.tables.iter().map(Inventory::of).collect();
        let update = Transaction::rewrite(&b, &existing);
        let rewritten = a.apply(&update.changes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cleaned = rewritten.apply(&update.cleanup).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(cleaned, b);
    }
}
