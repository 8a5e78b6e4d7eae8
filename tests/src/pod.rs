//! A pod of the lab: its own network namespace with `eth0` routed point-to-point to the node,
//! and the "who am I" servers it runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::lab::LabShared;
use crate::server;

/// Handle to one pod namespace. Cheap to clone; servers stop when the lab is dropped.
#[derive(Debug, Clone)]
pub struct Pod {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) netns: String,
    pub(crate) shared: Arc<LabShared>,
}

impl Pod {
    /// The pod's name, as its servers report it in every reply.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's address (`10.244.0.N`).
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The network namespace name, for [`crate::Lab::run_in`] and the client methods.
    #[must_use]
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `ip:port` of this pod.
    #[must_use]
    pub fn address(&self, port: u16) -> SocketAddr {
        (self.ip, port).into()
    }

    /// Runs a TCP server on `0.0.0.0:port`: every connection gets one line
    /// `"<pod> <peer-ip> <port>\n"` and is closed. Returns once the server listens.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub fn serve_tcp(&self, port: u16) {
        let handle = server::spawn_tcp(&self.netns, &self.name, port, Arc::clone(&self.shared.stop));
        self.shared.adopt_server(handle);
    }

    /// Runs a UDP server on `0.0.0.0:port`: every datagram gets the same line back.
    /// Returns once the socket is bound.
    ///
    /// # Panics
    /// If the port cannot be bound.
    pub fn serve_udp(&self, port: u16) {
        let handle = server::spawn_udp(&self.netns, &self.name, port, Arc::clone(&self.shared.stop));
        self.shared.adopt_server(handle);
    }
}
