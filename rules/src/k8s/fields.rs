//! Field checks shared by the Service and EndpointSlice conversions.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    HEADLESS_LABEL, IgnoreReason, ObjectError, ObjectKind, ObjectRef, Problem, SERVICE_PROXY_NAME_LABEL,
};
use crate::model::Protocol;

/// The namespace the API server gives an object that names none.
const DEFAULT_NAMESPACE: &str = "default";

/// Builds errors for one object, each naming the object and a field.
pub(super) struct Fields {
    /// The object the errors are about.
    pub object: ObjectRef,
}

impl Fields {
    /// Reads an object's identity; a missing name is reported as `?` and as an error.
    pub fn new(kind: ObjectKind, meta: &ObjectMeta) -> Result<Fields, ObjectError> {
        let namespace =
            meta.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let fields = Fields {
            object: ObjectRef { kind, namespace, name: meta.name.clone().unwrap_or_else(|| "?".into()) },
        };
        match meta.name.as_deref() {
            Some(name) if !name.is_empty() => {
                fields.name("metadata.name", name, 253)?;
                fields.name("metadata.namespace", &fields.object.namespace, 63)?;
                Ok(fields)
            }
            _ => Err(fields.error("metadata.name", Problem::Missing)),
        }
    }

    /// Checks a name against the API's character set (DNS subdomains and labels; port names
    /// are a subset): kproxy builds nftables object names from them.
    pub fn name(&self, field: impl Into<String>, text: &str, max: usize) -> Result<(), ObjectError> {
        let valid = text.len() <= max
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !text.starts_with(['-', '.'])
            && !text.ends_with(['-', '.']);
        if valid { Ok(()) } else { Err(self.error(field, Problem::InvalidName { value: text.into() })) }
    }

    /// An error about `field`.
    pub fn error(&self, field: impl Into<String>, problem: Problem) -> ObjectError {
        ObjectError { object: self.object.clone(), field: field.into(), problem }
    }

    /// Parses an IP address.
    pub fn ip(&self, field: impl Into<String>, text: &str) -> Result<IpAddr, ObjectError> {
        text.parse().map_err(|_| self.error(field, Problem::InvalidIp { value: text.into() }))
    }

    /// Checks a port number (1–65535).
    pub fn port(&self, field: impl Into<String>, value: i32) -> Result<u16, ObjectError> {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.error(field, Problem::PortOutOfRange { value }))
    }

    /// Parses a protocol; absent means TCP, as in the API.
    pub fn protocol(&self, field: impl Into<String>, value: Option<&str>) -> Result<Protocol, ObjectError> {
        match value {
            None | Some("TCP") => Ok(Protocol::Tcp),
            Some("UDP") => Ok(Protocol::Udp),
            Some("SCTP") => Ok(Protocol::Sctp),
            Some(other) => Err(self.error(field, Problem::UnknownProtocol { value: other.into() })),
        }
    }
}

/// The label filters kube-proxy applies to Services and EndpointSlices alike.
pub(super) fn ignored_by_labels(labels: Option<&BTreeMap<String, String>>) -> Option<IgnoreReason> {
    let labels = labels?;
    if labels.contains_key(SERVICE_PROXY_NAME_LABEL) {
        Some(IgnoreReason::OtherServiceProxy)
    } else if labels.contains_key(HEADLESS_LABEL) {
        Some(IgnoreReason::HeadlessLabel)
    } else {
        None
    }
}
