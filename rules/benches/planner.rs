//! Planner benchmarks: the pure part of a sync, at 1000 and 10000 Services.
//!
//! Run with `cargo bench -p kproxy-rules` (add `-- render` to run only the benchmarks whose
//! name contains `render`). The synthetic cluster is the one `hack/bench` programs into a
//! kernel and `docs/performance.md` reports: Service *i* is `bench/svc-<i>` with ClusterIP
//! `10.96.x.y`, TCP port 80, and one EndpointSlice of 10 ready endpoints, each on its own pod
//! IP, port 8080.
//!
//! Every benchmark starts from k8s-openapi objects, as the agent does; setup (building objects,
//! converting, rendering the inputs of the step being measured) is not timed.
//!
//! * `k8s_to_model` — `k8s::service` and `k8s::endpoint_slice` on every object, then
//!   `model::join`;
//! * `render` — `nft::render` of the joined Service ports;
//! * `full_transaction_text` — `Transaction::replace(&ruleset).to_string()`, the script a full
//!   sync feeds to `nft -f -`;
//! * `diff_one_endpoint` — `nft::diff(&a, &b)`, where `b` has one endpoint of one Service
//!   replaced; `diff_one_endpoint_text` adds the text of the resulting transactions;
//! * `incremental_plan` — what the planner spends on that change once the model is joined:
//!   render the new ruleset, diff it against the old one, write the transaction's text.

use std::net::Ipv4Addr;

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kproxy_rules::NodeContext;
use kproxy_rules::k8s::{self, Converted};
use kproxy_rules::model::{self, ServicePortEndpoints};
use kproxy_rules::nft::{self, Ruleset, Transaction};

/// Cluster sizes, in Services.
const SIZES: [usize; 2] = [1000, 10000];
/// Ready endpoints per Service.
const ENDPOINTS_PER_SERVICE: usize = 10;
/// The Service (index) whose endpoint changes, and the slot that changes.
const CHANGED_SERVICE: usize = 7;
const CHANGED_ENDPOINT: usize = 3;

fn main() {
    divan::main();
}

/// The objects of a synthetic cluster.
struct Cluster {
    services: Vec<core::Service>,
    slices: Vec<discovery::EndpointSlice>,
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
fn cluster(n: usize) -> Cluster {
    Cluster {
        services: (0..n).map(service).collect(),
        slices: (0..n).map(|i| endpoint_slice(i, (0..ENDPOINTS_PER_SERVICE).map(|k| pod_ip(i, k)))).collect(),
    }
}

/// The same cluster with endpoint [`CHANGED_ENDPOINT`] of Service [`CHANGED_SERVICE`] replaced
/// by a pod that is new to the cluster.
fn cluster_with_one_endpoint_changed(n: usize) -> Cluster {
    let mut changed = cluster(n);
    let addresses = (0..ENDPOINTS_PER_SERVICE).map(|k| {
        if k == CHANGED_ENDPOINT { Ipv4Addr::new(10, 200, 0, 1) } else { pod_ip(CHANGED_SERVICE, k) }
    });
    changed.slices[CHANGED_SERVICE] = endpoint_slice(CHANGED_SERVICE, addresses);
    changed
}

/// Converts every object and joins Services with their slices, as a sync does.
fn to_model(cluster: &Cluster) -> Vec<ServicePortEndpoints> {
    let services: Vec<model::Service> = cluster
        .services
        .iter()
        .filter_map(|s| match k8s::service(s) {
            Ok(Converted::Accepted(service)) => Some(service),
            _ => None,
        })
        .collect();
    let slices: Vec<model::EndpointSlice> = cluster
        .slices
        .iter()
        .filter_map(|s| match k8s::endpoint_slice(s) {
            Ok(Converted::Accepted(slice)) => Some(slice),
            _ => None,
        })
        .collect();
    model::join(&services, &slices).ports
}

fn node() -> NodeContext {
    NodeContext::new("node1")
}

/// The rulesets before and after the endpoint change.
fn rulesets(n: usize) -> (Ruleset, Ruleset) {
    let node = node();
    let before = nft::render(&to_model(&cluster(n)), &node);
    let after = nft::render(&to_model(&cluster_with_one_endpoint_changed(n)), &node);
    (before, after)
}

/// The text of an update: what the agent feeds to `nft -f -`, changes then cleanup.
fn update_text(update: &nft::Update) -> String {
    let mut text = update.changes.to_string();
    text.push_str(&update.cleanup.to_string());
    text
}

#[divan::bench(args = SIZES)]
fn k8s_to_model(bencher: Bencher, n: usize) {
    let cluster = cluster(n);
    assert_eq!(to_model(&cluster).len(), n, "every Service port is joined");
    bencher.counter(ItemsCount::new(n)).bench(|| to_model(divan::black_box(&cluster)));
}

#[divan::bench(args = SIZES)]
fn render(bencher: Bencher, n: usize) {
    let ports = to_model(&cluster(n));
    let node = node();
    bencher.counter(ItemsCount::new(n)).bench(|| nft::render(divan::black_box(&ports), &node));
}

#[divan::bench(args = SIZES)]
fn full_transaction_text(bencher: Bencher, n: usize) {
    let ruleset = nft::render(&to_model(&cluster(n)), &node());
    let bytes = Transaction::replace(&ruleset).to_string().len();
    bencher
        .counter(BytesCount::new(bytes))
        .bench(|| Transaction::replace(divan::black_box(&ruleset)).to_string());
}

#[divan::bench(args = SIZES)]
fn diff_one_endpoint(bencher: Bencher, n: usize) {
    let (before, after) = rulesets(n);
    let update = nft::diff(&before, &after).expect("an endpoint change is incremental");
    // Slots follow the endpoints' address order, so the new pod (10.200.0.1, last in that
    // order) moves slots 3..9 of that one Service: 7 map elements and one hairpin pair out,
    // as many in. Whatever the slot policy, the change must stay within that one Service.
    let elements = update.changes.element_count();
    assert!(elements <= 2 * (ENDPOINTS_PER_SERVICE + 1), "{elements} elements: {}", update_text(&update));
    bencher.bench(|| nft::diff(divan::black_box(&before), divan::black_box(&after)));
}

#[divan::bench(args = SIZES)]
fn diff_one_endpoint_text(bencher: Bencher, n: usize) {
    let (before, after) = rulesets(n);
    bencher.bench(|| {
        let update = nft::diff(divan::black_box(&before), divan::black_box(&after));
        update.as_ref().map(update_text)
    });
}

#[divan::bench(args = SIZES)]
fn incremental_plan(bencher: Bencher, n: usize) {
    let node = node();
    let before = nft::render(&to_model(&cluster(n)), &node);
    let ports = to_model(&cluster_with_one_endpoint_changed(n));
    bencher.bench(|| {
        let after = nft::render(divan::black_box(&ports), &node);
        nft::diff(&before, &after).as_ref().map(update_text)
    });
}
