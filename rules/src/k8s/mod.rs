//! From Kubernetes objects to the [`crate::model`].
//!
//! Each conversion takes one k8s-openapi object and returns either the model value,
//! [`Converted::Ignored`] with the reason kube-proxy would not proxy it either (headless,
//! ExternalName, the `service.kubernetes.io/service-proxy-name` and
//! `service.kubernetes.io/headless` labels, FQDN slices), or an [`ObjectError`] naming the
//! object, the field and what is wrong with it. Conversions never panic, whatever the input.

mod endpoint_slice;
mod error;
mod fields;
mod service;

pub use endpoint_slice::endpoint_slice;
pub use error::{ObjectError, ObjectKind, ObjectRef, Problem};
pub use service::service;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Objects carrying this label belong to another service proxy (kube-proxy ignores them too).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The annotation choosing a Service's scheduler (`random`, `rr`, `sh`, `maglev`).
pub const SCHEDULER_ANNOTATION: &str = "kproxy.io/scheduler";
/// Objects carrying this label are headless (kube-proxy ignores them too).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// A conversion's outcome for a well-formed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Converted<T> {
    /// The object is proxied.
    Accepted(T),
    /// The object is deliberately not proxied, and why.
    Ignored(IgnoreReason),
}

/// Why a well-formed object is not proxied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Labelled `service.kubernetes.io/service-proxy-name`: another proxy owns it.
    OtherServiceProxy,
    /// Labelled `service.kubernetes.io/headless`.
    HeadlessLabel,
    /// `clusterIP: None`: a headless Service, resolved by DNS only.
    Headless,
    /// No cluster IP allocated (yet).
    NoClusterIp,
    /// `type: ExternalName`: a DNS alias, nothing to proxy.
    ExternalName,
    /// `addressType: FQDN`: not an address kube-proxy programs.
    FqdnAddressType,
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IgnoreReason::OtherServiceProxy => "labelled service.kubernetes.io/service-proxy-name",
            IgnoreReason::HeadlessLabel => "labelled service.kubernetes.io/headless",
            IgnoreReason::Headless => "headless (clusterIP: None)",
            IgnoreReason::NoClusterIp => "no cluster IP allocated",
            IgnoreReason::ExternalName => "type ExternalName",
            IgnoreReason::FqdnAddressType => "addressType FQDN",
        })
    }
}
