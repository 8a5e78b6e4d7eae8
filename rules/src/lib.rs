//! The pure planning core of kproxy.
//!
//! Data flows one way through this crate, and each step is a module:
//!
//! * [`k8s`] turns Kubernetes objects (k8s-openapi `Service` and `EndpointSlice`) into the
//!   normalised [`model`], or into a typed [`k8s::ObjectError`] naming the object and field;
//! * [`model`] joins Services with their EndpointSlices into [`model::ServicePortEndpoints`];
//! * [`select`] decides which endpoints serve traffic (ready first, then serving+terminating);
//! * [`nft`] renders the desired nftables [`nft::Ruleset`] for this node and turns it into a
//!   [`nft::Transaction`] that the agent feeds to the kernel as nft text.
//!
//! Nothing here performs I/O, spawns tasks or reads a clock, so every rule is unit-, property-
//! and snapshot-testable. Start at [`nft::render`].
#![forbid(unsafe_code)]

pub mod conntrack;
pub mod explain;
pub mod k8s;
pub mod model;
pub mod nft;
pub mod sched;
pub mod select;

pub use model::NodeContext;
