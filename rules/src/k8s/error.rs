//! Typed errors for objects that cannot be proxied as they are.

use std::fmt;

use crate::model::IpFamily;

/// The kind of a Kubernetes object kproxy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
        })
    }
}

/// Which object: kind, namespace and name (`?` where the object has no name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: ObjectKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What is wrong with a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A required field is absent or empty.
    Missing,
    /// Not an IP address.
    InvalidIp {
        /// The offending text.
        value: String,
    },
    /// Not a valid Kubernetes name (lower-case letters, digits, `-` and `.`).
    InvalidName {
        /// The offending text.
        value: String,
    },
    /// Not a CIDR.
    InvalidCidr {
        /// The offending text.
        value: String,
    },
    /// A port outside 1–65535.
    PortOutOfRange {
        /// The offending number.
        value: i32,
    },
    /// A protocol other than TCP, UDP and SCTP.
    UnknownProtocol {
        /// The offending text.
        value: String,
    },
    /// An `addressType` other than IPv4, IPv6 and FQDN.
    UnknownAddressType {
        /// The offending text.
        value: String,
    },
    /// An address of the other family than the slice's `addressType`.
    FamilyMismatch {
        /// The address.
        value: String,
        /// The slice's address type.
        address_type: IpFamily,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is missing"),
            Problem::InvalidIp { value } => write!(f, "{value:?} is not an IP address"),
            Problem::InvalidCidr { value } => write!(f, "{value:?} is not a CIDR"),
            Problem::InvalidName { value } => write!(f, "{value:?} is not a valid name (a-z, 0-9, '-', '.')"),
            Problem::PortOutOfRange { value } => write!(f, "{value} is not a port (1-65535)"),
            Problem::UnknownProtocol { value } => {
                write!(f, "{value:?} is not a protocol (TCP, UDP or SCTP)")
            }
            Problem::UnknownAddressType { value } => {
                write!(f, "{value:?} is not an address type (IPv4, IPv6 or FQDN)")
            }
            Problem::FamilyMismatch { value, address_type } => {
                write!(
                    f,
                    "{value} is not an {address_type} address, but the slice's addressType is {address_type}"
                )
            }
        }
    }
}

/// One object that cannot be proxied: which object, which field, what is wrong.
///
/// The object is skipped and reported; every other object is still programmed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field} {problem}")]
pub struct ObjectError {
    /// The object.
    pub object: ObjectRef,
    /// The field's path, as in `spec.ports[1].port`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}
