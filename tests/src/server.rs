//! The lab's "who am I" servers: bound dual-stack to `[::]:port` inside a pod namespace (IPv4
//! peers arrive as mapped addresses and are reported as plain IPv4), they answer every TCP
//! connection and every UDP datagram with one [`Reply`] line naming the pod, the peer address
//! they saw and their own port. They poll a stop flag so that no thread outlives the lab.

use std::io::{self, ErrorKind, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::client::Reply;
use crate::netns::spawn_in;

/// How long a server blocks at most before it looks at the stop flag again.
const STOP_POLL: Duration = Duration::from_millis(20);
/// After traffic, a TCP server polls accept this often…
const BUSY_POLL: Duration = Duration::from_micros(200);
/// …for this long, then falls back to [`STOP_POLL`].
const BUSY_WINDOW: Duration = Duration::from_millis(500);

/// Starts a TCP server for `pod` on `[::]:port` (dual-stack) in namespace `netns`; returns once it listens.
///
/// # Panics
/// If the port cannot be bound.
pub(crate) fn spawn_tcp(netns: &str, pod: &str, port: u16, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let pod = pod.to_owned();
    let (bound, listening) = mpsc::channel();
    let handle = spawn_in(netns, move || {
        let listener = match bind_tcp(port) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = bound.send(Err(error));
                return;
            }
        };
        let _ = bound.send(Ok(()));
        serve_tcp(&listener, &pod, port, &stop);
    });
    wait_bound(&listening, "TCP", netns, port);
    handle
}

/// Starts a UDP server for `pod` on `[::]:port` (dual-stack) in namespace `netns`; returns once it is bound.
///
/// # Panics
/// If the port cannot be bound.
pub(crate) fn spawn_udp(netns: &str, pod: &str, port: u16, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let pod = pod.to_owned();
    let (bound, listening) = mpsc::channel();
    let handle = spawn_in(netns, move || {
        let socket = match bind_udp(port) {
            Ok(socket) => socket,
            Err(error) => {
                let _ = bound.send(Err(error));
                return;
            }
        };
        let _ = bound.send(Ok(()));
        serve_udp(&socket, &pod, port, &stop);
    });
    wait_bound(&listening, "UDP", netns, port);
    handle
}

fn wait_bound(listening: &mpsc::Receiver<io::Result<()>>, kind: &str, netns: &str, port: u16) {
    match listening.recv() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("{kind} server in {netns} cannot bind port {port}: {error}"),
        Err(_) => panic!("{kind} server thread in {netns} died before binding port {port}"),
    }
}

/// A socket bound to `[::]:port` that also takes IPv4 (`IPV6_V6ONLY` off, whatever the
/// namespace's `net.ipv6.bindv6only` says).
fn dual_stack_socket(kind: Type, port: u16) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, kind, None)?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(socket)
}

fn bind_tcp(port: u16) -> io::Result<TcpListener> {
    let socket = dual_stack_socket(Type::STREAM, port)?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    let socket: UdpSocket = dual_stack_socket(Type::DGRAM, port)?.into();
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

fn serve_tcp(listener: &TcpListener, pod: &str, port: u16, stop: &AtomicBool) {
    let mut last_traffic = Instant::now() - BUSY_WINDOW;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                last_traffic = Instant::now();
                answer_tcp(stream, pod, peer, port);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                let idle = if last_traffic.elapsed() < BUSY_WINDOW { BUSY_POLL } else { STOP_POLL };
                thread::sleep(idle);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                eprintln!("TCP server {pod}:{port}: accept failed: {error}");
                thread::sleep(STOP_POLL);
            }
        }
    }
}

fn answer_tcp(mut stream: TcpStream, pod: &str, peer: SocketAddr, port: u16) {
    let line = Reply { pod: pod.to_owned(), peer: peer.ip().to_canonical(), port }.to_line();
    // A client that gave up already is not the server's problem.
    let _ = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(1))))
        .and_then(|()| stream.write_all(line.as_bytes()));
}

fn serve_udp(socket: &UdpSocket, pod: &str, port: u16, stop: &AtomicBool) {
    let mut buffer = [0_u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buffer) {
            Ok((_, peer)) => {
                let line = Reply { pod: pod.to_owned(), peer: peer.ip().to_canonical(), port }.to_line();
                let _ = socket.send_to(line.as_bytes(), peer);
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // An ICMP error for an earlier answer can surface here; keep serving.
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => {}
            Err(error) => {
                eprintln!("UDP server {pod}:{port}: recv failed: {error}");
                thread::sleep(STOP_POLL);
            }
        }
    }
}
