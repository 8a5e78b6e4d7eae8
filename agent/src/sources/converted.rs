//! A store of watched objects as the planner needs them: each object is converted when its
//! watch event arrives, and only the conversion is kept. A kube-rs reflector store would keep
//! the whole object instead (58 MiB of k8s-openapi structs at 10k Services) and leave the
//! conversion of every object to every sync.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::Conversion;

/// An object's namespace and name.
type ObjectKey = (String, String);

/// The conversions of one kind's watched objects.
pub struct ConvertedStore<M> {
    state: Arc<Mutex<State<M>>>,
    ready: watch::Receiver<bool>,
}

/// Feeds a [`ConvertedStore`] with watch events.
pub struct Writer<M> {
    state: Arc<Mutex<State<M>>>,
    ready: watch::Sender<bool>,
}

struct State<M> {
    objects: BTreeMap<ObjectKey, Conversion<Arc<M>>>,
    /// A listing in progress: it replaces `objects` whole when it is complete, as a
    /// reflector's does.
    listing: Option<BTreeMap<ObjectKey, Conversion<Arc<M>>>>,
}

/// An empty store, not ready until its first complete listing, and its writer.
pub fn store<M>() -> (ConvertedStore<M>, Writer<M>) {
    let state = Arc::new(Mutex::new(State { objects: BTreeMap::new(), listing: None }));
    let (sender, receiver) = watch::channel(false);
    (ConvertedStore { state: Arc::clone(&state), ready: receiver }, Writer { state, ready: sender })
}

impl<M> ConvertedStore<M> {
    /// Resolves at the first complete listing; `Err` when the watch ended before it.
    pub async fn wait_until_ready(&mut self) -> Result<(), watch::error::RecvError> {
        self.ready.wait_for(|ready| *ready).await.map(|_| ())
    }

    /// Every conversion, in namespace and name order.
    pub fn conversions(&self) -> Vec<Conversion<Arc<M>>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.objects.values().cloned().collect()
    }
}

impl<M> Writer<M> {
    /// Applies one watch event, converting its object with `convert`.
    pub fn apply<K: Resource>(&self, event: &watcher::Event<K>, convert: impl Fn(&K) -> Conversion<M>) {
        let key = |object: &K| {
            let meta = object.meta();
            (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
        };
        let converted = |object: &K| convert(object).map(|m| m.map(Arc::new));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => state.listing = Some(BTreeMap::new()),
            watcher::Event::InitApply(object) => {
                state.listing.get_or_insert_with(BTreeMap::new).insert(key(object), converted(object));
            }
            watcher::Event::InitDone => {
                state.objects = state.listing.take().unwrap_or_default();
                drop(state);
                self.ready.send_replace(true);
            }
            watcher::Event::Apply(object) => {
                state.objects.insert(key(object), converted(object));
            }
            watcher::Event::Delete(object) => {
                state.objects.remove(&key(object));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn object(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            ..ConfigMap::default()
        }
    }

    fn names(store: &ConvertedStore<String>) -> Vec<String> {
        store.conversions().into_iter().map(|c| c.unwrap().unwrap().to_string()).collect()
    }

    #[test]
    fn a_relist_should_replace_the_objects_whole_when_it_is_complete() {
        let (store, writer) = store::<String>();
        let convert = |o: &ConfigMap| Ok(o.metadata.name.clone());
        for event in [watcher::Event::Init, watcher::Event::InitApply(object("a")), watcher::Event::InitDone]
        {
            writer.apply(&event, convert);
        }
        writer.apply(&watcher::Event::Apply(object("b")), convert);
        assert_eq!(names(&store), ["a", "b"]);
        writer.apply(&watcher::Event::Init, convert);
        writer.apply(&watcher::Event::InitApply(object("c")), convert);
        assert_eq!(names(&store), ["a", "b"], "a listing in progress changes nothing yet");
        writer.apply(&watcher::Event::InitDone, convert);
        assert_eq!(names(&store), ["c"]);
        writer.apply(&watcher::Event::Delete(object("c")), convert);
        assert!(names(&store).is_empty());
        assert!(*store.ready.borrow());
    }
}
