//! The normalised vocabulary kproxy plans with: Services, their ports and frontends, and the
//! endpoints EndpointSlices give them.
//!
//! Values here are validated: they come from [`crate::k8s`], which rejects bad input with a
//! typed error, so the planner never has to handle malformed data.

mod join;
mod types;

pub use join::{FrontendConflict, JoinedServices, join};
pub use types::{
    Conditions, Endpoint, EndpointSlice, EndpointSlicePort, Hints, IpFamily, NodeContext, Protocol, Service,
    ServiceInfo, ServiceName, ServicePort, ServicePortEndpoints, ServicePortName, SliceEndpoint,
    TrafficPolicy,
};
