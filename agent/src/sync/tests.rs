//! The sync loop against scripted watch streams and the in-memory kernel, on paused time.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_rules::nft::{Operation, Ruleset};
use kube::runtime::watcher::{self, Event};
use tokio::sync::oneshot;

use super::{SyncLoop, SyncSettings};
use crate::dataplane::fake::FakeDataplane;
use crate::serve::Status;
use crate::serve::health::Health;
use crate::serve::metrics::Metrics;
use crate::sources::kube::KubeSource;

type Feed<K> = UnboundedSender<watcher::Result<Event<K>>>;

fn service(name: &str, ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, ..Default::default() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(service: &str, addresses: &[String]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-1")),
            namespace: Some("default".into()),
            labels: Some([("kubernetes.io/service-name".to_string(), service.to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort { name: Some("http".into()), port: Some(8080), ..Default::default() }]),
        endpoints: addresses
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.clone()],
                conditions: Some(EndpointConditions { ready: Some(true), ..Default::default() }),
                ..Default::default()
            })
            .collect(),
    }
}

fn endpoints(first: u32, count: u32) -> Vec<String> {
    (first..first + count).map(|i| format!("10.244.{}.{}", i / 250, i % 250 + 1)).collect()
}

/// A running loop with its feeds, its fake kernel and a way to stop it.
struct Harness {
    services: Feed<Service>,
    slices: Feed<EndpointSlice>,
    nodes: Feed<Node>,
    kernel: Arc<FakeDataplane>,
    status: Arc<Status>,
}

impl Harness {
    fn new() -> (Harness, SyncLoop<KubeSource, Arc<FakeDataplane>>) {
        let (services, services_rx) = unbounded();
        let (slices, slices_rx) = unbounded();
        let (nodes, nodes_rx) = unbounded();
        let source = KubeSource::from_streams(services_rx, slices_rx, nodes_rx);
        let kernel = Arc::new(FakeDataplane::default());
        let status =
            Arc::new(Status { health: Health::new(Duration::from_secs(60)), metrics: Metrics::new() });
        let settings =
            SyncSettings { min_sync_period: Duration::from_secs(1), sync_period: Duration::from_secs(3600) };
        let sync = SyncLoop::new(
            source,
            Arc::clone(&kernel),
            crate::node::NodeSettings::named("node1"),
            settings,
            Arc::clone(&status),
            tokio::sync::watch::channel(None).0,
        );
        (Harness { services, slices, nodes, kernel, status }, sync)
    }

    /// Sends a complete initial listing of each kind.
    fn list(&self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        self.services.unbounded_send(Ok(Event::Init)).unwrap();
        for s in services {
            self.services.unbounded_send(Ok(Event::InitApply(s))).unwrap();
        }
        self.services.unbounded_send(Ok(Event::InitDone)).unwrap();
        self.slices.unbounded_send(Ok(Event::Init)).unwrap();
        for s in slices {
            self.slices.unbounded_send(Ok(Event::InitApply(s))).unwrap();
        }
        self.slices.unbounded_send(Ok(Event::InitDone)).unwrap();
    }

    fn list_nodes(&self) {
        self.nodes.unbounded_send(Ok(Event::Init)).unwrap();
        self.nodes.unbounded_send(Ok(Event::InitDone)).unwrap();
    }

    fn transactions(&self) -> usize {
        self.kernel.applied.lock().unwrap().len()
    }

    fn last_transaction(&self) -> String {
        self.kernel.applied.lock().unwrap().last().map(|tx| tx.text.clone()).unwrap_or_default()
    }

    fn kernel(&self) -> Ruleset {
        self.kernel.ruleset.lock().unwrap().clone()
    }
}

/// Runs `script` against a running loop, then stops the loop.
async fn drive(sync: SyncLoop<KubeSource, Arc<FakeDataplane>>, script: impl Future<Output = ()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let run = sync.run(async {
        let _ = stopped.await;
    });
    let script = async {
        script.await;
        let _ = stop.send(());
    };
    tokio::join!(run, script);
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

fn endpoint_in_kernel(kernel: &Ruleset, address: &str) -> bool {
    let address: std::net::IpAddr = address.parse().unwrap();
    kernel.tables[0].sets["endpoints-tcp"].elements.values().any(|e| {
        matches!(&e.value, Some(kproxy_rules::nft::ElementValue::Data(d)) if d[0] == kproxy_rules::nft::Value::Addr(address))
    })
}

#[tokio::test(start_paused = true)]
async fn sync_loop_should_wait_for_every_cache_before_the_first_sync() {
    let (h, sync) = Harness::new();
    drive(sync, async {
        h.services.unbounded_send(Ok(Event::Init)).unwrap();
        h.services.unbounded_send(Ok(Event::InitApply(service("web", "10.96.0.10")))).unwrap();
        h.services.unbounded_send(Ok(Event::InitDone)).unwrap();
        h.list_nodes();
        settle().await;
        assert_eq!(h.transactions(), 0, "EndpointSlices not listed yet: nothing may be programmed");
        h.slices.unbounded_send(Ok(Event::Init)).unwrap();
        h.slices.unbounded_send(Ok(Event::InitApply(slice("web", &endpoints(0, 2))))).unwrap();
        settle().await;
        assert_eq!(h.transactions(), 0, "a listing in progress is not a complete cache");
        h.slices.unbounded_send(Ok(Event::InitDone)).unwrap();
        settle().await;
        assert_eq!(h.transactions(), 1);
        assert!(
            h.last_transaction().contains("add rule ip kproxy services "),
            "the first sync is full: {}",
            h.last_transaction()
        );
        assert!(endpoint_in_kernel(&h.kernel(), "10.244.0.1"));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn sync_loop_should_send_only_the_change_after_the_first_sync() {
    let (h, sync) = Harness::new();
    drive(sync, async {
        let services: Vec<Service> =
            (0..100).map(|i| service(&format!("s{i}"), &format!("10.96.1.{i}"))).collect();
        let slices: Vec<EndpointSlice> =
            (0..100).map(|i| slice(&format!("s{i}"), &endpoints(i * 10, 3))).collect();
        h.list(services, slices);
        h.list_nodes();
        settle().await;
        assert_eq!(h.transactions(), 1);
        let mut changed = endpoints(70, 3);
        changed[2] = "10.244.9.9".into();
        h.slices.unbounded_send(Ok(Event::Apply(slice("s7", &changed)))).unwrap();
        settle().await;
        assert_eq!(h.transactions(), 2);
        let applied = h.kernel.applied.lock().unwrap();
        let tx = applied.last().unwrap();
        assert!(
            tx.text.lines().all(|l| l.starts_with("add element ") || l.starts_with("delete element ")),
            "{}",
            tx.text
        );
        assert!(tx.elements <= 4, "{}", tx.text);
        drop(applied);
        assert!(endpoint_in_kernel(&h.kernel(), "10.244.9.9"));
        assert!(!endpoint_in_kernel(&h.kernel(), "10.244.0.73"));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn sync_loop_should_coalesce_a_burst_of_a_thousand_endpoint_changes_into_a_handful_of_syncs() {
    let (h, sync) = Harness::new();
    drive(sync, async {
        h.list(vec![service("web", "10.96.0.10")], vec![slice("web", &endpoints(0, 3))]);
        h.list_nodes();
        settle().await;
        let before = h.transactions();
        for i in 0..1000 {
            h.slices.unbounded_send(Ok(Event::Apply(slice("web", &endpoints(i, 3))))).unwrap();
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        settle().await;
        let syncs = h.transactions() - before;
        assert!((1..=5).contains(&syncs), "{syncs} syncs for 1000 changes");
        assert!(endpoint_in_kernel(&h.kernel(), &endpoints(999, 1)[0]), "the last change is programmed");
        assert_eq!(
            h.status
                .metrics
                .encode()
                .lines()
                .find(|l| l.starts_with("kubeproxy_sync_proxy_rules_endpoint_changes_total")),
            Some("kubeproxy_sync_proxy_rules_endpoint_changes_total 1000")
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn failed_transaction_should_keep_the_rules_and_make_the_next_sync_full() {
    let (h, sync) = Harness::new();
    drive(sync, async {
        h.list(vec![service("web", "10.96.0.10")], vec![slice("web", &endpoints(0, 2))]);
        h.list_nodes();
        settle().await;
        let before = h.kernel();
        *h.kernel.fail_next.lock().unwrap() = 1;
        h.slices.unbounded_send(Ok(Event::Apply(slice("web", &endpoints(5, 2))))).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(h.kernel() == before, "a failed transaction changes nothing");
        assert_eq!(h.transactions(), 1);
        settle().await;
        assert_eq!(h.transactions(), 2, "retried");
        let retry = h.last_transaction();
        assert!(
            retry.contains("flush table ip kproxy\n") && retry.contains("add rule ip kproxy services "),
            "the retry is a full sync, in place: {retry}"
        );
        assert!(endpoint_in_kernel(&h.kernel(), "10.244.0.6"));
        assert!(
            h.status.metrics.encode().contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 1")
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn api_server_going_away_should_keep_the_rules_and_a_relist_should_apply_what_changed() {
    let (h, sync) = Harness::new();
    drive(sync, async {
        h.list(
            vec![service("web", "10.96.0.10"), service("old", "10.96.0.11")],
            vec![slice("web", &endpoints(0, 2))],
        );
        h.list_nodes();
        settle().await;
        let programmed = h.kernel();
        for _ in 0..3 {
            h.services.unbounded_send(Err(watcher::Error::NoResourceVersion)).unwrap();
            h.slices.unbounded_send(Err(watcher::Error::NoResourceVersion)).unwrap();
        }
        settle().await;
        assert!(h.kernel() == programmed, "the rules stay while the API server is away");
        // The watch resumes with a relist: "old" was deleted meanwhile, "web" scaled up.
        h.list(vec![service("web", "10.96.0.10")], vec![slice("web", &endpoints(0, 3))]);
        settle().await;
        let kernel = h.kernel();
        assert!(endpoint_in_kernel(&kernel, "10.244.0.3"));
        let cluster_ips = &kernel.tables[0].sets["cluster-ips"].elements;
        assert_eq!(cluster_ips.len(), 1, "the deleted Service is gone: {cluster_ips:?}");
    })
    .await;
}

/// The kernel after a first sync of `services` and `slices` on an empty kernel.
async fn programmed_afresh(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Ruleset {
    let (h, sync) = Harness::new();
    drive(sync, async {
        h.list(services, slices);
        h.list_nodes();
        settle().await;
    })
    .await;
    h.kernel()
}

#[tokio::test(start_paused = true)]
async fn first_sync_should_rewrite_in_place_what_an_earlier_run_left() {
    let earlier = programmed_afresh(
        vec![service("web", "10.96.0.10"), service("old", "10.96.0.11")],
        vec![slice("web", &endpoints(0, 3)), slice("old", &endpoints(10, 4))],
    )
    .await;
    assert!(earlier.tables[0].chains.contains_key("pick-tcp-4"));
    let wanted =
        programmed_afresh(vec![service("web", "10.96.0.10")], vec![slice("web", &endpoints(0, 2))]).await;

    let (h, sync) = Harness::new();
    *h.kernel.ruleset.lock().unwrap() = earlier;
    drive(sync, async {
        h.list(vec![service("web", "10.96.0.10")], vec![slice("web", &endpoints(0, 2))]);
        h.list_nodes();
        settle().await;
    })
    .await;
    let applied = h.kernel.applied.lock().unwrap();
    let first = &applied[0].text;
    assert!(first.contains("flush table ip kproxy\n") && !first.contains("delete table"), "{first}");
    assert_eq!(applied[1].text, "delete chain ip kproxy pick-tcp-3\ndelete chain ip kproxy pick-tcp-4\n");
    drop(applied);
    assert!(h.kernel() == wanted, "the kernel holds exactly what a fresh start would have programmed");
}

#[tokio::test(start_paused = true)]
async fn a_rewrite_the_kernel_refuses_should_fall_back_to_replacing_the_tables() {
    let (h, sync) = Harness::new();
    let table = kproxy_rules::nft::TableRef { family: kproxy_rules::nft::Family::Ip, name: "kproxy".into() };
    let mut older = kproxy_rules::nft::Transaction::default();
    older.push(Operation::AddTable { table: table.clone(), comment: None });
    older.push(Operation::AddSet {
        table,
        decl: kproxy_rules::nft::SetDecl {
            name: "cluster-ips".into(),
            key: kproxy_rules::nft::SetKey::Types(vec![kproxy_rules::nft::DataType::InetService]),
            data: None,
            comment: None,
            timeout: None,
        },
    });
    *h.kernel.ruleset.lock().unwrap() = Ruleset::default().apply(&older).unwrap();
    drive(sync, async {
        h.list(vec![service("web", "10.96.0.10")], vec![slice("web", &endpoints(0, 2))]);
        h.list_nodes();
        settle().await;
        assert_eq!(h.transactions(), 1, "the refused rewrite took no effect");
        assert!(h.last_transaction().starts_with("add table ip kproxy\ndelete table ip kproxy\n"));
        assert!(endpoint_in_kernel(&h.kernel(), "10.244.0.2"));
        assert!(
            h.status.metrics.encode().contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total 0")
        );
    })
    .await;
}
