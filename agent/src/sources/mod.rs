//! Where Services, EndpointSlices and the Node come from: a directory of manifests or the
//! Kubernetes API. Both implement [`Source`], so the sync loop cannot tell them apart.

mod converted;
pub mod kube;
pub mod manifests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_rules::k8s::{self, Converted, ObjectError};
use kproxy_rules::model;

/// Where an object was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A manifest file and the 1-based document number within it.
    File {
        /// The file.
        file: PathBuf,
        /// The document, counting from 1.
        document: usize,
    },
    /// The Kubernetes API.
    Api,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, document } => write!(f, "{}: document {document}", file.display()),
            Origin::Api => f.write_str("API"),
        }
    }
}

/// An input that could not be read, reported and skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct InputError {
    /// The file, document and object, as far as known.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// The EndpointSlice annotation that records when the change it carries was triggered, for
/// `kubeproxy_network_programming_duration_seconds`.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// An EndpointSlice as the planner reads it, with its trigger time.
#[derive(Clone, Debug)]
pub struct Slice {
    /// The slice in the planner's model.
    pub model: model::EndpointSlice,
    /// [`TRIGGER_TIME_ANNOTATION`], when set.
    pub trigger_time: Option<String>,
}

/// Everything a source knows at one moment, already converted to the planner's model: sources
/// convert an object once, when it is read, not at every sync.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The Services kproxy proxies.
    pub services: Vec<Arc<model::Service>>,
    /// Their EndpointSlices.
    pub endpoint_slices: Vec<Arc<Slice>>,
    /// Node objects: the API source watches only this node's, a manifests directory may hold
    /// any.
    pub nodes: Vec<Arc<Node>>,
    /// Inputs that could not be read or converted.
    pub errors: Vec<InputError>,
}

impl Snapshot {
    /// Appends `other`'s objects and errors (the objects are shared, not copied).
    pub fn extend(&mut self, other: &Snapshot) {
        self.services.extend(other.services.iter().cloned());
        self.endpoint_slices.extend(other.endpoint_slices.iter().cloned());
        self.nodes.extend(other.nodes.iter().cloned());
        self.errors.extend(other.errors.iter().cloned());
    }

    /// Converts a Service read from `origin` and adds it; one that kproxy does not proxy
    /// (headless, ExternalName) is left out, an invalid one becomes an error.
    pub fn add_service(&mut self, origin: &Origin, object: &Service) {
        let converted = convert_service(origin, object).map(|s| s.map(Arc::new));
        self.add(converted, |snapshot| &mut snapshot.services);
    }

    /// Converts an EndpointSlice read from `origin` and adds it, like [`Snapshot::add_service`].
    pub fn add_endpoint_slice(&mut self, origin: &Origin, object: &EndpointSlice) {
        let converted = convert_endpoint_slice(origin, object).map(|s| s.map(Arc::new));
        self.add(converted, |snapshot| &mut snapshot.endpoint_slices);
    }

    /// Adds one converted object, or its error.
    pub fn add<M>(
        &mut self,
        converted: Conversion<Arc<M>>,
        objects: impl FnOnce(&mut Snapshot) -> &mut Vec<Arc<M>>,
    ) {
        match converted {
            Ok(Some(object)) => objects(self).push(object),
            Ok(None) => {}
            Err(e) => self.errors.push(e),
        }
    }
}

/// One object converted for the planner: accepted, not proxied (`None`), or invalid.
pub type Conversion<M> = Result<Option<M>, InputError>;

/// Converts a Service read from `origin`.
pub fn convert_service(origin: &Origin, object: &Service) -> Conversion<model::Service> {
    accept(origin, k8s::service(object))
}

/// Converts an EndpointSlice read from `origin`, keeping its trigger time.
pub fn convert_endpoint_slice(origin: &Origin, object: &EndpointSlice) -> Conversion<Slice> {
    let trigger_time = object.metadata.annotations.as_ref().and_then(|a| a.get(TRIGGER_TIME_ANNOTATION));
    let model = accept(origin, k8s::endpoint_slice(object))?;
    Ok(model.map(|model| Slice { model, trigger_time: trigger_time.cloned() }))
}

fn accept<M>(origin: &Origin, converted: Result<Converted<M>, ObjectError>) -> Conversion<M> {
    match converted {
        Ok(Converted::Accepted(model)) => Ok(Some(model)),
        Ok(Converted::Ignored(reason)) => {
            tracing::debug!(%origin, %reason, "not proxied");
            Ok(None)
        }
        Err(e) => Err(InputError { location: origin.to_string(), message: e.to_string() }),
    }
}

/// How many objects of each kind changed since the last call to [`Source::changed`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Service events.
    pub services: u64,
    /// EndpointSlice events.
    pub endpoint_slices: u64,
    /// Node events.
    pub node: u64,
}

/// A source of cluster state for the sync loop.
pub trait Source {
    /// Resolves once every cache holds a complete first listing, so that the first sync never
    /// programs a partial (or empty) ruleset.
    async fn ready(&mut self);
    /// Resolves at the next change (changes that arrive in between accumulate).
    async fn changed(&mut self) -> Changes;
    /// The current state.
    fn snapshot(&self) -> Snapshot;
}
