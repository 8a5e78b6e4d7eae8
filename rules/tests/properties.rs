//! Property tests: whatever the objects say, the pipeline never panics, and what it renders
//! is always a ruleset the kernel's reference rules accept.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_rules::k8s::{self, Converted};
use kproxy_rules::model::{self, NodeContext};
use kproxy_rules::nft::{self, Transaction};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("None".to_string()),
        Just("10.96.0.1".to_string()),
        Just("10.244.0.7".to_string()),
        Just("fd00::1".to_string()),
        Just("TCP".to_string()),
        Just("UDP".to_string()),
        Just("IPv4".to_string()),
        Just("IPv6".to_string()),
        Just("FQDN".to_string()),
        "[a-z0-9.:\" \\-]{0,12}",
    ]
}

fn port_number() -> impl Strategy<Value = i32> {
    prop_oneof![Just(80), Just(8080), 0..70000i32, any::<i32>()]
}

fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::btree_map(
            prop_oneof![
                Just(k8s::SERVICE_NAME_LABEL.to_string()),
                Just(k8s::HEADLESS_LABEL.to_string()),
                text()
            ],
            text(),
            0..3,
        )),
    )
        .prop_map(|(name, namespace, labels)| ObjectMeta {
            name,
            namespace,
            labels,
            ..Default::default()
        })
}

fn service() -> impl Strategy<Value = core::Service> {
    let port = (proptest::option::of(text()), port_number(), proptest::option::of(text()))
        .prop_map(|(name, port, protocol)| core::ServicePort { name, port, protocol, ..Default::default() });
    let spec = (
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(text(), 0..3)),
        proptest::option::of(prop_oneof![Just("ExternalName".to_string()), text()]),
        proptest::option::of(proptest::collection::vec(port, 0..4)),
    )
        .prop_map(|(cluster_ip, cluster_ips, type_, ports)| core::ServiceSpec {
            cluster_ip,
            cluster_ips,
            type_,
            ports,
            ..Default::default()
        });
    (meta(), proptest::option::of(spec)).prop_map(|(metadata, spec)| core::Service {
        metadata,
        spec,
        ..Default::default()
    })
}

fn endpoint_slice() -> impl Strategy<Value = discovery::EndpointSlice> {
    let port =
        (proptest::option::of(text()), proptest::option::of(port_number()), proptest::option::of(text()))
            .prop_map(|(name, port, protocol)| discovery::EndpointPort {
                name,
                port,
                protocol,
                ..Default::default()
            });
    let conditions = (any::<Option<bool>>(), any::<Option<bool>>(), any::<Option<bool>>()).prop_map(
        |(ready, serving, terminating)| discovery::EndpointConditions { ready, serving, terminating },
    );
    let endpoint = (proptest::collection::vec(text(), 0..2), proptest::option::of(conditions)).prop_map(
        |(addresses, conditions)| discovery::Endpoint { addresses, conditions, ..Default::default() },
    );
    (
        meta(),
        text(),
        proptest::collection::vec(endpoint, 0..4),
        proptest::option::of(proptest::collection::vec(port, 0..3)),
    )
        .prop_map(|(metadata, address_type, endpoints, ports)| discovery::EndpointSlice {
            metadata,
            address_type,
            endpoints,
            ports,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pipeline_should_never_panic_and_always_render_a_valid_ruleset(
        services in proptest::collection::vec(service(), 0..6),
        slices in proptest::collection::vec(endpoint_slice(), 0..6),
    ) {
        let services: Vec<model::Service> = services
            .iter()
            .filter_map(|s| match k8s::service(s) { Ok(Converted::Accepted(s)) => Some(s), _ => None })
            .collect();
        let slices: Vec<model::EndpointSlice> = slices
            .iter()
            .filter_map(|s| match k8s::endpoint_slice(s) { Ok(Converted::Accepted(s)) => Some(s), _ => None })
            .collect();
        let joined = model::join(&services, &slices);
        let ruleset = nft::render(&joined.ports, &NodeContext::new("node1"));
        prop_assert_eq!(ruleset.validate(), Ok(()));
        let script = Transaction::replace(&ruleset).to_string();
        prop_assert!(script.lines().all(|l| l.matches('"').count() % 2 == 0), "unbalanced quotes in {}", script);
    }
}
