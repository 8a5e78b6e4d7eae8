//! The synthetic cluster of the benchmarks, the one `hack/bench` programs into a kernel and
//! `docs/performance.md` reports: Service *i* is `bench/svc-<i>` with ClusterIP `10.96.x.y`,
//! TCP port 80, and one EndpointSlice of 10 ready endpoints, each on its own pod IP, port 8080.
#![allow(dead_code, reason = "each benchmark uses a different subset")]

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kproxy_rules::NodeContext;
use kproxy_rules::k8s::{self, Converted};
use kproxy_rules::model::{self, ServicePortEndpoints};

/// Ready endpoints per Service.
pub const ENDPOINTS_PER_SERVICE: usize = 10;
/// The Service (index) whose endpoint changes…
pub const CHANGED_SERVICE: usize = 7;
/// …and the slot that changes.
pub const CHANGED_ENDPOINT: usize = 3;

/// The objects of a synthetic cluster.
pub struct Cluster {
    /// The Services.
    pub services: Vec<core::Service>,
    /// Their EndpointSlices, one each.
    pub slices: Vec<discovery::EndpointSlice>,
}

/// The ClusterIP of Service `i`: 10.96.0.10, 10.96.0.11, … (as in `hack/bench`).
fn cluster_ip(i: usize) -> Ipv4Addr {
    let host = u32::try_from(i).expect("small index") + 10;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + host)
}

/// The pod IP of endpoint `k` of Service `i`: distinct for every (i, k), from 10.128.0.1 on.
fn pod_ip(i: usize, k: usize) -> Ipv4Addr {
    let host = u32::try_from(i * ENDPOINTS_PER_SERVICE + k).expect("small index") + 1;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + host)
}

fn meta(name: String, labels: Option<(&str, String)>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some("bench".into()),
        labels: labels.map(|(k, v)| [(k.to_string(), v)].into()),
        ..ObjectMeta::default()
    }
}

fn service(i: usize) -> core::Service {
    let ip = cluster_ip(i).to_string();
    core::Service {
        metadata: meta(format!("svc-{i}"), None),
        spec: Some(core::ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![core::ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(8080)),
                ..core::ServicePort::default()
            }]),
            ..core::ServiceSpec::default()
        }),
        ..core::Service::default()
    }
}

fn endpoint_slice(i: usize, addresses: impl IntoIterator<Item = Ipv4Addr>) -> discovery::EndpointSlice {
    discovery::EndpointSlice {
        metadata: meta(format!("svc-{i}-1"), Some((k8s::SERVICE_NAME_LABEL, format!("svc-{i}")))),
        address_type: "IPv4".into(),
        endpoints: addresses
            .into_iter()
            .map(|address| discovery::Endpoint {
                addresses: vec![address.to_string()],
                conditions: Some(discovery::EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("node1".into()),
                ..discovery::Endpoint::default()
            })
            .collect(),
        ports: Some(vec![discovery::EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..discovery::EndpointPort::default()
        }]),
    }
}

/// `n` Services with 10 ready endpoints each.
pub fn cluster(n: usize) -> Cluster {
    Cluster {
        services: (0..n).map(service).collect(),
        slices: (0..n).map(|i| endpoint_slice(i, (0..ENDPOINTS_PER_SERVICE).map(|k| pod_ip(i, k)))).collect(),
    }
}

/// The same cluster with endpoint [`CHANGED_ENDPOINT`] of Service [`CHANGED_SERVICE`] replaced
/// by a pod that is new to the cluster.
pub fn cluster_with_one_endpoint_changed(n: usize) -> Cluster {
    let mut changed = cluster(n);
    let addresses = (0..ENDPOINTS_PER_SERVICE).map(|k| {
        if k == CHANGED_ENDPOINT { Ipv4Addr::new(10, 200, 0, 1) } else { pod_ip(CHANGED_SERVICE, k) }
    });
    changed.slices[CHANGED_SERVICE] = endpoint_slice(CHANGED_SERVICE, addresses);
    changed
}

/// Converts every object, as a source does when it reads them (the synthetic objects are all
/// valid).
pub fn convert(cluster: &Cluster) -> (Vec<model::Service>, Vec<model::EndpointSlice>) {
    fn accepted<K, M>(
        objects: &[K],
        conversion: impl Fn(&K) -> Result<Converted<M>, k8s::ObjectError>,
    ) -> Vec<M> {
        objects
            .iter()
            .filter_map(|object| match conversion(object) {
                Ok(Converted::Accepted(model)) => Some(model),
                _ => None,
            })
            .collect()
    }
    (accepted(&cluster.services, k8s::service), accepted(&cluster.slices, k8s::endpoint_slice))
}

/// Converts every object and joins Services with their slices.
pub fn to_model(cluster: &Cluster) -> Vec<ServicePortEndpoints> {
    let (services, slices) = convert(cluster);
    model::join(&services, &slices).ports
}

pub fn node() -> NodeContext {
    NodeContext::new("node1")
}
