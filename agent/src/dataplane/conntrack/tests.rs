use std::net::SocketAddr;
use std::num::NonZeroI32;
use std::sync::Mutex;

use kproxy_rules::NodeContext;
use kproxy_rules::conntrack::{Entry, IpProtocol, Tuple};
use kproxy_rules::model::{
    Conditions, Endpoint, Hints, IpFamily, Protocol, ServiceInfo, ServiceName, ServicePort,
    ServicePortEndpoints, ServicePortName,
};
use netlink_packet_core::{
    DefaultNla, DoneMessage, ErrorMessage, NLM_F_MULTIPART, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol as NetlinkProtocol,
    Tuple as NetlinkTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::wire::{self, Reply};
use super::*;
use crate::serve::health::Health;
use crate::serve::metrics::Metrics;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp(client: &str, frontend: &str, endpoint: &str) -> KernelEntry {
    let (client, frontend, endpoint) = (addr(client), addr(frontend), addr(endpoint));
    KernelEntry {
        entry: Entry {
            protocol: IpProtocol::UDP,
            original: Tuple { source: client, destination: frontend },
            reply: Tuple { source: endpoint, destination: client },
        },
        zone: None,
    }
}

// === wire ===

#[test]
fn dump_request_should_ask_for_udp_entries_of_one_family() {
    #[rustfmt::skip]
    let expected: [u8; 48] = [
        // nlmsghdr: length 48, IPCTNL_MSG_CT_GET of NFNL_SUBSYS_CTNETLINK, REQUEST|DUMP, seq 7
        48, 0, 0, 0, 0x01, 0x01, 0x01, 0x03, 7, 0, 0, 0, 0, 0, 0, 0,
        // nfgenmsg: AF_INET, version 0, res_id 0
        2, 0, 0, 0,
        // CTA_TUPLE_ORIG { CTA_TUPLE_PROTO { CTA_PROTO_NUM 17 } }
        16, 0, 0x01, 0x80, 12, 0, 0x02, 0x80, 5, 0, 1, 0, 17, 0, 0, 0,
        // CTA_FILTER { CTA_FILTER_ORIG_FLAGS CTA_FILTER_FLAG(CTA_PROTO_NUM) }
        12, 0, 0x19, 0x80, 8, 0, 1, 0, 8, 0, 0, 0,
    ];
    assert_eq!(wire::dump_request(IpFamily::V4, 7, true), expected);
    let unfiltered = wire::dump_request(IpFamily::V6, 8, false);
    assert_eq!(unfiltered.len(), 20, "header and nfgenmsg only");
    assert_eq!(unfiltered[16], 10, "AF_INET6");
}

#[test]
fn delete_request_should_name_the_whole_original_tuple_and_zone() {
    let mut entry = udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353");
    entry.zone = Some(3);
    let bytes = wire::delete_request(&entry, 42);
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
    assert_eq!(message.header.sequence_number, 42);
    assert_eq!(message.header.flags, netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK);
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        header,
        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attributes)),
        ..
    }) = message.payload
    else {
        panic!("not a conntrack delete: {:?}", message.payload);
    };
    assert_eq!(header.family, NetfilterProtoFamily::IPv4);
    assert_eq!(
        attributes[0],
        ConntrackAttribute::CtaTupleOrig(vec![
            NetlinkTuple::Ip(vec![
                IPTuple::SourceAddress("10.244.0.20".parse().unwrap()),
                IPTuple::DestinationAddress("10.96.0.10".parse().unwrap()),
            ]),
            NetlinkTuple::Proto(vec![
                ProtoTuple::Protocol(NetlinkProtocol::Udp),
                ProtoTuple::SourcePort(40000),
                ProtoTuple::DestinationPort(53),
            ]),
        ])
    );
    assert_eq!(attributes[1], ConntrackAttribute::Other(DefaultNla::new(18, vec![0, 3])));
    assert_eq!(attributes.len(), 2);
    let v6 = udp("[fd00::20]:40000", "[fd00:96::10]:53", "[fd00::11]:5353");
    assert_eq!(wire::delete_request(&v6, 1)[16], 10, "AF_INET6");
}

fn tuple(source: &str, destination: &str) -> Vec<NetlinkTuple> {
    let (source, destination) = (addr(source), addr(destination));
    vec![
        NetlinkTuple::Ip(vec![
            IPTuple::SourceAddress(source.ip()),
            IPTuple::DestinationAddress(destination.ip()),
        ]),
        NetlinkTuple::Proto(vec![
            ProtoTuple::Protocol(NetlinkProtocol::Udp),
            ProtoTuple::SourcePort(source.port()),
            ProtoTuple::DestinationPort(destination.port()),
        ]),
    ]
}

fn kernel_message(sequence: u32, payload: NetlinkPayload<NetfilterMessage>) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.sequence_number = sequence;
    header.flags = NLM_F_MULTIPART;
    let mut message = NetlinkMessage::new(header, payload);
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

#[test]
fn dump_replies_should_parse_into_entries_then_done() {
    let entry = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple("10.244.0.20:40000", "10.96.0.10:53")),
            ConntrackAttribute::CtaTupleReply(tuple("10.244.0.11:5353", "10.244.0.20:40000")),
            ConntrackAttribute::CtaTimeout(30),
            ConntrackAttribute::Other(DefaultNla::new(18, vec![0, 5])),
        ]),
    );
    let half = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::New(vec![ConntrackAttribute::CtaTupleOrig(tuple("10.0.0.1:1", "10.0.0.2:2"))]),
    );
    let mut datagram = kernel_message(9, NetlinkPayload::InnerMessage(entry));
    datagram.extend(kernel_message(9, NetlinkPayload::InnerMessage(half)));
    datagram.extend(kernel_message(9, NetlinkPayload::Done(DoneMessage::default())));
    let mut expected = udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353");
    expected.zone = Some(5);
    assert_eq!(
        wire::parse_replies(&datagram).unwrap(),
        [
            Reply::Entry { sequence: 9, entry: Some(expected) },
            Reply::Entry { sequence: 9, entry: None },
            Reply::Done { sequence: 9 },
        ]
    );
}

#[test]
fn acks_and_errors_should_carry_their_request_sequence() {
    let mut error = ErrorMessage::default();
    error.code = NonZeroI32::new(-2);
    error.header = vec![0; 16];
    let mut ack = ErrorMessage::default();
    ack.header = vec![0; 16];
    let mut datagram = kernel_message(4, NetlinkPayload::Error(error));
    datagram.extend(kernel_message(5, NetlinkPayload::Error(ack)));
    assert_eq!(
        wire::parse_replies(&datagram).unwrap(),
        [Reply::Error { sequence: 4, errno: 2 }, Reply::Ack { sequence: 5 }]
    );
    assert!(wire::parse_replies(&[40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(), "truncated");
}

// === reconcile and follow, against a table in memory ===

#[derive(Default)]
struct Table {
    entries: Vec<KernelEntry>,
    listed: Vec<IpFamily>,
    opened: usize,
    fail: bool,
}

struct FakeTable(Arc<Mutex<Table>>);

impl ConntrackTable for FakeTable {
    async fn list_udp(&mut self, family: IpFamily) -> Result<Vec<KernelEntry>, ConntrackError> {
        let mut table = self.0.lock().unwrap();
        if table.fail {
            return Err(ConntrackError::Kernel("list", io::Error::from_raw_os_error(22)));
        }
        table.listed.push(family);
        Ok(table
            .entries
            .iter()
            .filter(|e| IpFamily::of(&e.entry.original.source.ip()) == family)
            .copied()
            .collect())
    }

    async fn delete(&mut self, entries: &[KernelEntry]) -> Result<usize, ConntrackError> {
        let mut table = self.0.lock().unwrap();
        let before = table.entries.len();
        table.entries.retain(|e| !entries.contains(e));
        Ok(before - table.entries.len())
    }
}

fn dns_port(endpoints: &[&str]) -> ServicePortEndpoints {
    let service = ServiceName { namespace: "default".into(), name: "dns".into() };
    ServicePortEndpoints {
        port: ServicePort {
            name: ServicePortName { service, port: "dns".into(), protocol: Protocol::Udp },
            port: 53,
            node_port: None,
            service: Arc::new(ServiceInfo {
                cluster_ips: vec!["10.96.0.10".parse().unwrap()],
                ..ServiceInfo::default()
            }),
        },
        endpoints: endpoints
            .iter()
            .map(|a| {
                let a = addr(a);
                Endpoint {
                    address: a.ip(),
                    port: a.port(),
                    conditions: Conditions::READY,
                    node_name: None,
                    zone: None,
                    hints: Hints::default(),
                }
            })
            .collect(),
    }
}

fn outcome(ports: Vec<ServicePortEndpoints>) -> Arc<SyncOutcome> {
    Arc::new(SyncOutcome { ports: Arc::new(ports), node: NodeContext::new("node1") })
}

#[tokio::test]
async fn reconcile_should_delete_only_stale_udp_entries() {
    let live = udp("10.244.0.20:40000", "10.96.0.10:53", "10.244.0.11:5353");
    let stale = udp("10.244.0.20:40001", "10.96.0.10:53", "10.244.0.12:5353");
    let other = udp("10.244.0.20:40002", "10.244.0.12:5353", "10.244.0.12:5353");
    let table = Arc::new(Mutex::new(Table { entries: vec![live, stale, other], ..Table::default() }));
    let done = reconcile(&mut FakeTable(table.clone()), &outcome(vec![dns_port(&["10.244.0.11:5353"])]))
        .await
        .unwrap();
    assert_eq!(done, Reconciliation { frontends: 1, listed: 3, stale: 1, deleted: 1 });
    let table = table.lock().unwrap();
    assert_eq!(table.entries, [live, other]);
    assert_eq!(table.listed, [IpFamily::V4], "no IPv6 frontend, no IPv6 dump");
}

#[tokio::test]
async fn reconcile_without_udp_frontends_should_not_list_the_table() {
    let table = Arc::new(Mutex::new(Table::default()));
    let done = reconcile(&mut FakeTable(table.clone()), &outcome(Vec::new())).await.unwrap();
    assert_eq!(done, Reconciliation::default());
    assert!(table.lock().unwrap().listed.is_empty());
}

fn status() -> Arc<Status> {
    Arc::new(Status { health: Health::new(Duration::from_secs(60)), metrics: Metrics::new() })
}

/// Waits (in paused time) until `check` holds.
async fn until(mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn follower_should_reconcile_every_outcome_record_metrics_and_survive_errors() {
    let stale = udp("10.244.0.20:40001", "10.96.0.10:53", "10.244.0.12:5353");
    let table = Arc::new(Mutex::new(Table { entries: vec![stale], fail: true, ..Table::default() }));
    let status = status();
    let (outcomes, receiver) = tokio::sync::watch::channel(None);
    let opener = {
        let table = table.clone();
        move || {
            table.lock().unwrap().opened += 1;
            FakeTable(table.clone())
        }
    };
    let follower = tokio::spawn(follow_table(receiver, status.clone(), opener));

    for _ in 0..3 {
        let opened = table.lock().unwrap().opened;
        outcomes.send_replace(Some(outcome(vec![dns_port(&["10.244.0.11:5353"])])));
        until(|| table.lock().unwrap().opened == opened + 1).await;
    }
    assert_eq!(status.metrics.conntrack_reconciler_deleted_entries.get(), 0, "a failure deletes nothing");

    table.lock().unwrap().fail = false;
    outcomes.send_replace(Some(outcome(vec![dns_port(&["10.244.0.11:5353"])])));
    until(|| status.metrics.conntrack_reconciler_deleted_entries.get() == 1).await;
    assert!(table.lock().unwrap().entries.is_empty());
    let text = status.metrics.encode();
    assert!(text.contains("kubeproxy_conntrack_reconciler_sync_duration_seconds_count 4"), "{text}");

    drop(outcomes);
    follower.await.expect("the follower ends when the sync loop is gone");
}

#[tokio::test]
async fn socket_should_not_be_opened_without_udp_frontends() {
    let mut socket = ConntrackSocket::new();
    assert_eq!(reconcile(&mut socket, &outcome(Vec::new())).await.unwrap(), Reconciliation::default());
    assert!(socket.socket.is_none());
}
