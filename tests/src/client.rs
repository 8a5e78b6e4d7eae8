//! Clients that ask a lab server who it is: one TCP connection or one UDP datagram per request,
//! each from a fresh socket (so a fresh source port and a fresh conntrack entry), and a
//! [`Tally`] that counts answers per pod.
//!
//! The functions here act in the namespace of the **calling thread**; [`crate::Lab`] wraps them
//! with [`crate::netns::run_in`] to pick the client namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// A transport protocol, as in a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP: one connection per request.
    Tcp,
    /// UDP: one datagram per request, from a fresh socket.
    Udp,
}

impl Protocol {
    /// The name Kubernetes uses in manifests (`TCP`, `UDP`).
    #[must_use]
    pub fn kubernetes_name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// What a lab server answered: the line `"<pod> <peer-ip> <server-port>\n"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Name of the pod whose server answered.
    pub pod: String,
    /// The source address the server saw (after any masquerading).
    pub peer: IpAddr,
    /// The port the answering server listens on, so a test can tell which target port a
    /// Service port was translated to.
    pub port: u16,
}

impl Reply {
    /// The line a server sends for this reply (the wire format of the lab's servers).
    #[must_use]
    pub fn to_line(&self) -> String {
        format!("{} {} {}\n", self.pod, self.peer, self.port)
    }

    /// Parses a server's line.
    ///
    /// # Errors
    /// [`ClientError::Malformed`] when the line does not have the three fields.
    pub fn parse(line: &str) -> Result<Self, ClientError> {
        let malformed = || ClientError::Malformed(line.to_owned());
        let mut fields = line.trim_end().split(' ');
        let pod = fields.next().filter(|pod| !pod.is_empty()).ok_or_else(malformed)?;
        let peer = fields.next().and_then(|peer| peer.parse().ok()).ok_or_else(malformed)?;
        let port = fields.next().and_then(|port| port.parse().ok()).ok_or_else(malformed)?;
        if fields.next().is_some() {
            return Err(malformed());
        }
        Ok(Self { pod: pod.to_owned(), peer, port })
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum ClientError {
    /// `ECONNREFUSED`: a TCP reset or an ICMP port-unreachable came back (a reject).
    Refused,
    /// Nothing came back in time (a drop, or no route that answers).
    Timeout,
    /// `EPERM` on send: a netfilter rule in the sender's own namespace (output hook) dropped or
    /// rejected the packet before it left.
    Denied,
    /// Any other socket error.
    Io(io::Error),
    /// The server answered something that is not a lab reply line.
    Malformed(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str("refused"),
            Self::Timeout => f.write_str("timeout"),
            Self::Denied => f.write_str("denied by a local rule (EPERM)"),
            Self::Io(error) => write!(f, "io error: {error}"),
            Self::Malformed(line) => write!(f, "malformed reply {line:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            ErrorKind::ConnectionRefused => Self::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Self::Timeout,
            ErrorKind::PermissionDenied => Self::Denied,
            _ => Self::Io(error),
        }
    }
}

/// One request over `protocol` to `address`, in the calling thread's namespace.
///
/// # Errors
/// See [`tcp_request`] and [`udp_request`].
pub fn request(protocol: Protocol, address: SocketAddr, timeout: Duration) -> Result<Reply, ClientError> {
    request_from(None, protocol, address, timeout)
}

/// One request over `protocol` to `address` from a socket bound to `source` (an address of
/// the calling thread's namespace; any port) when given, else from the address the kernel
/// picks.
///
/// # Errors
/// See [`tcp_request`] and [`udp_request`].
pub fn request_from(
    source: Option<IpAddr>,
    protocol: Protocol,
    address: SocketAddr,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    match protocol {
        Protocol::Tcp => tcp_request_from(source, address, timeout),
        Protocol::Udp => udp_request_from(source, address, timeout),
    }
}

/// Opens one TCP connection to `address`, reads the server's line until it closes, all within
/// `timeout`, in the calling thread's namespace.
///
/// # Errors
/// [`ClientError::Refused`] on `ECONNREFUSED`, [`ClientError::Timeout`] when connecting or
/// reading takes longer than `timeout`, otherwise [`ClientError::Io`] or
/// [`ClientError::Malformed`].
pub fn tcp_request(address: SocketAddr, timeout: Duration) -> Result<Reply, ClientError> {
    tcp_request_from(None, address, timeout)
}

/// Like [`tcp_request`], from a socket bound to `source` when given.
///
/// # Errors
/// See [`tcp_request`]; binding to an address the namespace does not have is an
/// [`ClientError::Io`] error.
pub fn tcp_request_from(
    source: Option<IpAddr>,
    address: SocketAddr,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut stream = match source {
        None => TcpStream::connect_timeout(&address, timeout)?,
        Some(source) => {
            let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
            socket.bind(&SocketAddr::new(source, 0).into())?;
            socket.connect_timeout(&address.into(), timeout)?;
            TcpStream::from(socket)
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(remaining.max(Duration::from_millis(1))))?;
    let mut line = String::new();
    stream.read_to_string(&mut line)?;
    Reply::parse(&line)
}

/// Sends one datagram to `address` from a fresh, connected UDP socket and waits at most `timeout`
/// for the answer, in the calling thread's namespace.
///
/// # Errors
/// [`ClientError::Refused`] when an ICMP port-unreachable came back (reported by the kernel as
/// `ECONNREFUSED` on a connected socket), [`ClientError::Timeout`] when nothing came back,
/// otherwise [`ClientError::Io`] or [`ClientError::Malformed`].
pub fn udp_request(address: SocketAddr, timeout: Duration) -> Result<Reply, ClientError> {
    udp_request_from(None, address, timeout)
}

/// Like [`udp_request`], from a socket bound to `source` when given.
///
/// # Errors
/// See [`udp_request`].
pub fn udp_request_from(
    source: Option<IpAddr>,
    address: SocketAddr,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let local: IpAddr = source.unwrap_or(match address {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    });
    let socket = UdpSocket::bind((local, 0))?;
    socket.connect(address)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(b"who?\n")?;
    let mut buffer = [0_u8; 512];
    let length = socket.recv(&mut buffer)?;
    Reply::parse(&String::from_utf8_lossy(&buffer[..length]))
}

/// Answers and failures of a series of requests.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Number of answers per pod name.
    pub answers: BTreeMap<String, usize>,
    /// Every distinct (pod, peer address seen, server port) with its count.
    pub replies: BTreeMap<(String, IpAddr, u16), usize>,
    /// Requests refused (`ECONNREFUSED`).
    pub refused: usize,
    /// Requests that timed out.
    pub timeouts: usize,
    /// Other errors, as text.
    pub errors: Vec<String>,
}

impl Tally {
    /// Adds one request's outcome.
    pub fn record(&mut self, outcome: &Result<Reply, ClientError>) {
        match outcome {
            Ok(reply) => {
                *self.answers.entry(reply.pod.clone()).or_default() += 1;
                *self.replies.entry((reply.pod.clone(), reply.peer, reply.port)).or_default() += 1;
            }
            Err(ClientError::Refused) => self.refused += 1,
            Err(ClientError::Timeout) => self.timeouts += 1,
            Err(other) => self.errors.push(other.to_string()),
        }
    }

    /// Number of requests recorded.
    #[must_use]
    pub fn total(&self) -> usize {
        self.answered() + self.failures()
    }

    /// Number of requests that got an answer.
    #[must_use]
    pub fn answered(&self) -> usize {
        self.answers.values().sum()
    }

    /// Number of requests that got no answer, for any reason.
    #[must_use]
    pub fn failures(&self) -> usize {
        self.refused + self.timeouts + self.errors.len()
    }

    /// Answers from `pod`.
    #[must_use]
    pub fn count(&self, pod: &str) -> usize {
        self.answers.get(pod).copied().unwrap_or(0)
    }

    /// The fraction of all requests that `pod` answered.
    #[must_use]
    pub fn share(&self, pod: &str) -> f64 {
        let total = self.total();
        if total == 0 { 0.0 } else { self.count(pod) as f64 / total as f64 }
    }

    /// The server ports that answered (each tells which target port a Service port reached).
    #[must_use]
    pub fn ports(&self) -> BTreeSet<u16> {
        self.replies.keys().map(|(_, _, port)| *port).collect()
    }

    /// The peer addresses the servers saw.
    #[must_use]
    pub fn peers(&self) -> BTreeSet<IpAddr> {
        self.replies.keys().map(|(_, peer, _)| *peer).collect()
    }

    /// Names of the pods that answered at least once.
    #[must_use]
    pub fn pods(&self) -> Vec<&str> {
        self.answers.keys().map(String::as_str).collect()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests:", self.total())?;
        for ((pod, peer, port), count) in &self.replies {
            write!(
                f,
                " {pod} (peer {peer}, port {port}) {count} = {:.1}%;",
                100.0 * *count as f64 / self.total() as f64
            )?;
        }
        write!(f, " refused {}, timeouts {}", self.refused, self.timeouts)?;
        if !self.errors.is_empty() {
            write!(f, ", errors {:?}", self.errors)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_should_round_trip_through_its_line() {
        let reply = Reply { pod: "pod1".into(), peer: "10.244.0.1".parse().unwrap(), port: 8080 };
        assert_eq!(Reply::parse(&reply.to_line()).unwrap(), reply);
    }

    #[test]
    fn reply_should_reject_a_line_without_a_port() {
        assert!(matches!(Reply::parse("pod1 10.244.0.1\n"), Err(ClientError::Malformed(_))));
    }

    #[test]
    fn tally_should_count_shares_over_all_requests() {
        let mut tally = Tally::default();
        let reply = Reply { pod: "a".into(), peer: "10.0.0.1".parse().unwrap(), port: 1 };
        tally.record(&Ok(reply.clone()));
        tally.record(&Ok(reply));
        tally.record(&Err(ClientError::Refused));
        tally.record(&Err(ClientError::Timeout));
        assert_eq!(tally.total(), 4);
        assert_eq!(tally.failures(), 2);
        assert!((tally.share("a") - 0.5).abs() < f64::EPSILON);
    }
}
