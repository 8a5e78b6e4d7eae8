//! The Kubernetes API as a [`Source`]: kube-rs reflectors for Services, EndpointSlices and this
//! node's Node.
//!
//! Services and EndpointSlices are watched with kube-proxy's label selector, so the API server
//! filters out objects that belong to another service proxy or are headless. Each watch runs in
//! its own task. Services and EndpointSlices are converted to the planner's model as their
//! events arrive and only the conversions are kept ([`ConvertedStore`]); the Node is kept whole
//! in a reflector [`Store`]. The sync loop reads the stores. When the API server goes away the
//! stores keep their last state (so do the rules), the watchers retry with backoff, and a
//! relist that shows changes wakes the sync loop like any other event.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;

use super::converted::{self, ConvertedStore};
use super::{Changes, Conversion, Origin, Slice, Snapshot, Source, convert_endpoint_slice, convert_service};
use kproxy_rules::k8s::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};
use kproxy_rules::model;

/// The label selector kube-proxy lists Services and EndpointSlices with.
pub fn proxied_objects_selector() -> String {
    format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}")
}

/// The API access the agent needs, as RBAC rules: (API group, resource, verbs). The daemonset's
/// ClusterRole must grant exactly this; `kproxy debug rbac` prints it.
pub const API_ACCESS: &[(&str, &str, &[&str])] = &[
    ("", "services", &["get", "list", "watch"]),
    ("", "nodes", &["get", "list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["get", "list", "watch"]),
    // Warning Events on Services (an unknown scheduler): crate::events.
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// Counts events per kind and wakes the sync loop.
#[derive(Default)]
struct ChangeCounter {
    services: AtomicU64,
    endpoint_slices: AtomicU64,
    node: AtomicU64,
    notify: Notify,
}

/// The API server's view of this node's Services, EndpointSlices and Node.
pub struct KubeSource {
    services: ConvertedStore<model::Service>,
    endpoint_slices: ConvertedStore<Slice>,
    node: Store<Node>,
    changes: Arc<ChangeCounter>,
}

/// Which counter an object kind bumps.
#[derive(Clone, Copy)]
enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl KubeSource {
    /// Starts watching through `client`; `node_name` selects the Node object.
    pub fn start(client: Client, node_name: &str) -> KubeSource {
        let proxied = watcher::Config::default().labels(&proxied_objects_selector());
        let this_node = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        KubeSource::from_streams(
            watcher(Api::<Service>::all(client.clone()), proxied.clone()).default_backoff(),
            watcher(Api::<EndpointSlice>::all(client.clone()), proxied).default_backoff(),
            watcher(Api::<Node>::all(client), this_node).default_backoff(),
        )
    }

    /// A source fed by arbitrary watch streams: the API's, or scripted ones in tests.
    pub fn from_streams(
        services: impl Stream<Item = watcher::Result<watcher::Event<Service>>> + Send + 'static,
        endpoint_slices: impl Stream<Item = watcher::Result<watcher::Event<EndpointSlice>>> + Send + 'static,
        node: impl Stream<Item = watcher::Result<watcher::Event<Node>>> + Send + 'static,
    ) -> KubeSource {
        let changes = Arc::new(ChangeCounter::default());
        KubeSource {
            services: convert(services, Kind::Service, &changes, convert_service),
            endpoint_slices: convert(endpoint_slices, Kind::EndpointSlice, &changes, convert_endpoint_slice),
            node: reflect(node, Kind::Node, &changes),
            changes,
        }
    }
}

/// Follows one kind in its own task, keeping the conversions of its objects.
fn convert<K, M>(
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    kind: Kind,
    changes: &Arc<ChangeCounter>,
    conversion: fn(&Origin, &K) -> Conversion<M>,
) -> ConvertedStore<M>
where
    K: Resource + Send + 'static,
    M: Send + Sync + 'static,
{
    let (store, writer) = converted::store();
    let changes = Arc::clone(changes);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(stream);
        while let Some(event) = events.next().await {
            if let Ok(event) = &event {
                writer.apply(event, |object| conversion(&Origin::Api, object));
            }
            changes.count(kind, &event);
        }
    });
    store
}

/// Runs a reflector for one kind in its own task and returns its store.
fn reflect<K>(
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    kind: Kind,
    changes: &Arc<ChangeCounter>,
) -> Store<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let (store, writer): (Store<K>, Writer<K>) = reflector::store();
    let changes = Arc::clone(changes);
    let events = stream.modify(slim).reflect(writer);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            changes.count(kind, &event);
        }
    });
    store
}

impl ChangeCounter {
    /// Counts one watch event of `kind` and wakes the sync loop when it changed something.
    fn count<K>(&self, kind: Kind, event: &watcher::Result<watcher::Event<K>>) {
        let counter = match kind {
            Kind::Service => &self.services,
            Kind::EndpointSlice => &self.endpoint_slices,
            Kind::Node => &self.node,
        };
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                counter.fetch_add(1, Ordering::Relaxed);
                self.notify.notify_one();
            }
            Ok(watcher::Event::InitDone) => self.notify.notify_one(),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::warn!("watch failed, retrying with backoff: {e}"),
        }
    }
}

/// The last `kubectl apply` of an object, as an annotation: often its largest field.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from an object what kproxy never reads and what makes up much of an object's size,
/// before the store keeps it: `managedFields` and the last-applied annotation.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

impl Source for KubeSource {
    async fn ready(&mut self) {
        let ended = |kind: &str| tracing::error!("the {kind} watch ended before its first listing");
        if self.services.wait_until_ready().await.is_err() {
            ended("Service");
        }
        if self.endpoint_slices.wait_until_ready().await.is_err() {
            ended("EndpointSlice");
        }
        if self.node.wait_until_ready().await.is_err() {
            ended("Node");
        }
    }

    async fn changed(&mut self) -> Changes {
        self.changes.notify.notified().await;
        Changes {
            services: self.changes.services.swap(0, Ordering::Relaxed),
            endpoint_slices: self.changes.endpoint_slices.swap(0, Ordering::Relaxed),
            node: self.changes.node.swap(0, Ordering::Relaxed),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot { nodes: self.node.state(), ..Snapshot::default() };
        for service in self.services.conversions() {
            snapshot.add(service, |s| &mut s.services);
        }
        for slice in self.endpoint_slices.conversions() {
            snapshot.add(slice, |s| &mut s.endpoint_slices);
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    use super::*;

    #[test]
    fn slim_should_drop_managed_fields_and_the_last_applied_annotation_and_keep_the_rest() {
        let mut service = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                annotations: Some(
                    [(LAST_APPLIED_ANNOTATION, "{…}"), ("kproxy.io/scheduler", "maglev")]
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        slim(&mut service);
        assert_eq!(service.metadata.managed_fields, None);
        let annotations = service.metadata.annotations.unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["kproxy.io/scheduler"]);
    }
}
