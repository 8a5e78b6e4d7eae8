//! A pod of the lab: its own network namespace with `eth0` routed point-to-point to its node
//! (IPv4 and IPv6), and the "who am I" servers it runs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::lab::LabShared;
use crate::server;

/// Handle to one pod namespace. Cheap to clone; servers stop when the lab is dropped.
#[derive(Debug, Clone)]
pub struct Pod {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) ip6: Ipv6Addr,
    pub(crate) node_name: &'static str,
    pub(crate) netns: String,
    pub(crate) shared: Arc<LabShared>,
}

impl Pod {
    /// The pod's name, as its servers report it in every reply.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's IPv4 address (`10.244.0.N` on node1, `10.244.2.N` on node2).
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The pod's IPv6 address (`fd00:10:244::N` on node1, `fd00:10:244:2::N` on node2).
    #[must_use]
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }

    /// The node the pod runs on (`node1` or `node2`), its endpoints' `nodeName`.
    #[must_use]
    pub fn node_name(&self) -> &'static str {
        self.node_name
    }

    /// The network namespace name, for [`crate::Lab::run_in`] and the client methods.
    #[must_use]
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `ip:port` of this pod (IPv4).
    #[must_use]
    pub fn address(&self, port: u16) -> SocketAddr {
        (self.ip, port).into()
    }

    /// `[ip6]:port` of this pod.
    #[must_use]
    pub fn address6(&self, port: u16) -> SocketAddr {
        (self.ip6, port).into()
    }

    /// Runs a dual-stack TCP server on `[::]:port` (IPv4 too): every connection gets one line
    /// `"<pod> <peer-ip> <port>\n"` and is closed. Returns once the server listens.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub fn serve_tcp(&self, port: u16) {
        let handle = server::spawn_tcp(&self.netns, &self.name, port, Arc::clone(&self.shared.stop));
        self.shared.adopt_server(handle);
    }

    /// Runs a dual-stack UDP server on `[::]:port`: every datagram gets the same line back.
    /// Returns once the socket is bound.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub fn serve_udp(&self, port: u16) {
        let handle = server::spawn_udp(&self.netns, &self.name, port, Arc::clone(&self.shared.stop));
        self.shared.adopt_server(handle);
    }
}
