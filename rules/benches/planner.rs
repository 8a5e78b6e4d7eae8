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

mod common;

use common::{ENDPOINTS_PER_SERVICE, cluster, cluster_with_one_endpoint_changed, node, to_model};
use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use kproxy_rules::nft::{self, Ruleset, Transaction};

/// Cluster sizes, in Services.
const SIZES: [usize; 2] = [1000, 10000];

fn main() {
    divan::main();
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
