//! Builders of k8s-openapi objects for the rules crate's tests.
#![allow(dead_code, reason = "each test file uses a different subset of the builders")]

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_rules::k8s::{self, Converted};
use kproxy_rules::model::{self, NodeContext, ServicePortEndpoints};

/// A ClusterIP Service `default/<name>` with `(port name, port, protocol)` ports.
pub fn service(name: &str, cluster_ips: &[&str], ports: &[(&str, i32, &str)]) -> core::Service {
    core::Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(core::ServiceSpec {
            cluster_ip: cluster_ips.first().map(|s| s.to_string()),
            cluster_ips: Some(cluster_ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| core::ServicePort {
                        name: Some(n.to_string()),
                        port: *p,
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An endpoint: address and (ready, serving, terminating).
pub type Ep<'a> = (&'a str, (bool, bool, bool));

/// Ready, serving, not terminating.
pub const READY: (bool, bool, bool) = (true, true, false);

/// An EndpointSlice of `default/<service>` with `(name, port, protocol)` ports.
pub fn slice(
    name: &str,
    service: &str,
    address_type: &str,
    ports: &[(&str, i32, &str)],
    endpoints: &[Ep<'_>],
) -> discovery::EndpointSlice {
    discovery::EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([(k8s::SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
            ..Default::default()
        },
        address_type: address_type.into(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, proto)| discovery::EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(*p),
                    protocol: Some(proto.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
        endpoints: endpoints
            .iter()
            .map(|(address, (ready, serving, terminating))| discovery::Endpoint {
                addresses: vec![address.to_string()],
                conditions: Some(discovery::EndpointConditions {
                    ready: Some(*ready),
                    serving: Some(*serving),
                    terminating: Some(*terminating),
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// Converts and joins objects that are known to be valid.
pub fn plan(services: &[core::Service], slices: &[discovery::EndpointSlice]) -> Vec<ServicePortEndpoints> {
    let services: Vec<model::Service> = services
        .iter()
        .map(|s| match k8s::service(s) {
            Ok(Converted::Accepted(s)) => s,
            other => panic!("test Service not accepted: {other:?}"),
        })
        .collect();
    let slices: Vec<model::EndpointSlice> = slices
        .iter()
        .map(|s| match k8s::endpoint_slice(s) {
            Ok(Converted::Accepted(s)) => s,
            other => panic!("test EndpointSlice not accepted: {other:?}"),
        })
        .collect();
    model::join(&services, &slices).ports
}

/// The node the tests plan for.
pub fn node() -> NodeContext {
    NodeContext::new("node1")
}
