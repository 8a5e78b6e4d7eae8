//! A TCP forwarder that makes a remote address (an API server) reachable from inside a lab
//! namespace at `127.0.0.1:<port>`, without any route or address outside the lab: the listening
//! socket lives in the lab namespace, the outgoing connections in the test's own. It can be
//! taken down and brought back, which is how the tests play an API server going away.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::netns::spawn_in;

/// A running forwarder; dropping it stops it.
pub struct Forwarder {
    local: SocketAddr,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:port` in `netns` and forwards every connection to `upstream`.
    ///
    /// # Panics
    /// If the port cannot be bound in the namespace.
    pub fn start(netns: &str, port: u16, upstream: SocketAddr) -> Forwarder {
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let listener =
            spawn_in(netns, move || TcpListener::bind(local)).join().expect("bind thread").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let forwarder = Forwarder {
            local,
            up: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        let (up, stop, connections) =
            (Arc::clone(&forwarder.up), Arc::clone(&forwarder.stop), Arc::clone(&forwarder.connections));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) if up.load(Ordering::Relaxed) => {
                        let _ = inbound.set_nonblocking(false);
                        if let Ok(outbound) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
                            pump(inbound, outbound, &connections);
                        }
                    }
                    Ok((inbound, _)) => drop(inbound),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        forwarder
    }

    /// The address to use inside the namespace.
    pub fn local_address(&self) -> SocketAddr {
        self.local
    }

    /// Cuts every connection and refuses new ones, as a stopped API server would.
    pub fn take_down(&self) {
        self.up.store(false, Ordering::Relaxed);
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn bring_back(&self) {
        self.up.store(true, Ordering::Relaxed);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.take_down();
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies bytes both ways until either side closes; keeps handles to cut them later.
fn pump(inbound: TcpStream, outbound: TcpStream, connections: &Arc<Mutex<Vec<TcpStream>>>) {
    let mut list = connections.lock().unwrap();
    for stream in [&inbound, &outbound] {
        if let Ok(handle) = stream.try_clone() {
            list.push(handle);
        }
    }
    drop(list);
    for (mut from, mut to) in
        [(inbound.try_clone(), outbound.try_clone()), (outbound.try_clone(), inbound.try_clone())]
            .into_iter()
            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
    {
        thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buffer) {
                if n == 0 || to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}
