//! Kernel end-to-end tests for kproxy.
//!
//! This library builds **labs** of network namespaces — a node, pods on point-to-point veth
//! pairs (IPv4 and IPv6), a gateway, and on demand a second node with remote pods and an
//! external client behind the gateway — runs "who am I" servers in the pods, runs the real
//! `kproxy` binary in the node namespace, and asserts on real connections: who answered, what
//! source address the pod saw, refused versus dropped. Nothing touches the root network
//! namespace; every lab is removed when it is dropped, also when a test panics.
//!
//! Start at [`Lab`]; every test first calls [`root_or_skip`]:
//!
//! ```no_run
//! use kproxy_e2e::{Endpoint, EndpointSlice, Lab, Protocol, Service, ServicePort, root_or_skip};
//!
//! if !root_or_skip() {
//!     return;
//! }
//! let lab = Lab::new();
//! let client = lab.add_pod("client");
//! let web = lab.add_pod("web1");
//! web.serve_tcp(8080);
//! let service = Service::cluster_ip("default", "web", "10.96.0.10").port(ServicePort::tcp("http", 80, 8080));
//! let slice = EndpointSlice::for_service(&service).endpoint(Endpoint::ready(web.ip()));
//! lab.manifests().write("web.yaml", &[&service, &slice]);
//! let _agent = lab.start_kproxy(lab.manifests().path());
//! lab.wait_for_answers(client.netns(), Protocol::Tcp, service.address("http"), [&web]);
//! ```

pub mod agent;
pub mod client;
pub mod command;
pub mod fake_api;
pub mod forwarder;
pub mod lab;
pub mod manifest;
pub mod netns;
pub mod pod;
pub mod root;
mod server;
mod setns;
pub mod wait;

pub use agent::{Agent, kproxy_binary};
pub use client::{ClientError, Protocol, Reply, Tally};
pub use command::CommandOutput;
pub use lab::{
    CLUSTER_CIDR, EXTERNAL_CLIENT_IP, EXTERNAL_CLIENT_IP6, EXTERNAL_IP_RANGE, ExternalClient, GATEWAY_IP,
    GATEWAY_IP6, Lab, NODE_LINK_IP, NODE_LINK_IP6, NODE_NAME, NODE_UPLINK_IP, NODE_UPLINK_IP6, NODE_ZONE,
    NODE2_LINK_IP, NODE2_LINK_IP6, NODE2_NAME, POD_GATEWAY, POD_GATEWAY6, REMOTE_POD_GATEWAY,
    REMOTE_POD_GATEWAY6, Source,
};
pub use manifest::{
    Endpoint, EndpointPort, EndpointSlice, IpFamily, LoadBalancerIngress, Manifest, ManifestDir, Node,
    Service, ServicePort, ServiceType, TrafficPolicy,
};
pub use pod::Pod;
pub use root::{root_or_skip, say_skipped};
