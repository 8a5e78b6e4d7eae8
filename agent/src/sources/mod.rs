//! Where Services, EndpointSlices and the Node come from: a directory of manifests or the
//! Kubernetes API. Both implement [`Source`], so the sync loop cannot tell them apart.

pub mod kube;
pub mod manifests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

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

/// An object with the place it was read from.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// Where it was found.
    pub origin: Origin,
    /// The object.
    pub object: T,
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

/// Everything a source knows at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The Services.
    pub services: Vec<Located<Arc<Service>>>,
    /// The EndpointSlices.
    pub endpoint_slices: Vec<Located<Arc<EndpointSlice>>>,
    /// Node objects: the API source watches only this node's, a manifests directory may hold
    /// any.
    pub nodes: Vec<Arc<Node>>,
    /// Inputs that could not be read.
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
