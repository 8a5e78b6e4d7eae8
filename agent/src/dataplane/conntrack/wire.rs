//! The ctnetlink messages as data: requests built, replies parsed, no socket involved.

use std::net::{IpAddr, SocketAddr};

use kproxy_rules::conntrack::{Entry, IpProtocol, Tuple};
use kproxy_rules::model::IpFamily;
use netlink_packet_core::{
    DefaultNla, Emitable, NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple as NetlinkTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::{ConntrackError, KernelEntry};

/// `CTA_ZONE`: the entry's zone, a big-endian u16.
const CTA_ZONE: u16 = 18;
/// `CTA_FILTER`: nested dump filter (Linux 5.8+).
const CTA_FILTER: u16 = 25;
/// `CTA_FILTER_ORIG_FLAGS`: which fields of `CTA_TUPLE_ORIG` the dump must match (host u32).
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
/// `CTA_FILTER_FLAG(CTA_PROTO_NUM)`: match the layer-4 protocol.
const CTA_FILTER_FLAG_PROTO_NUM: u32 = 1 << 3;

/// A reply from the kernel, reduced to what the reconciliation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A dumped entry; `None` when it has no usable tuples (then it is skipped).
    Entry {
        /// The request it answers.
        sequence: u32,
        /// The entry.
        entry: Option<KernelEntry>,
    },
    /// The end of a dump.
    Done {
        /// The request it answers.
        sequence: u32,
    },
    /// A request succeeded.
    Ack {
        /// The request it answers.
        sequence: u32,
    },
    /// A request failed with this errno.
    Error {
        /// The request it answers.
        sequence: u32,
        /// The positive errno.
        errno: i32,
    },
}

fn family_header(family: IpFamily) -> NetfilterHeader {
    let family = match family {
        IpFamily::V4 => NetfilterProtoFamily::IPv4,
        IpFamily::V6 => NetfilterProtoFamily::IPv6,
    };
    NetfilterHeader::new(family, 0, 0)
}

fn serialize(flags: u16, sequence: u32, message: NetfilterMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// A request to dump the conntrack table of `family`; with `udp_only`, asking the kernel to
/// send only UDP entries (`CTA_FILTER` on the original tuple's protocol).
pub fn dump_request(family: IpFamily, sequence: u32, udp_only: bool) -> Vec<u8> {
    let mut attributes = Vec::new();
    if udp_only {
        attributes.push(ConntrackAttribute::CtaTupleOrig(vec![NetlinkTuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::Udp),
        ])]));
    }
    let mut bytes = serialize(
        NLM_F_REQUEST | NLM_F_DUMP,
        sequence,
        NetfilterMessage::new(family_header(family), ConntrackMessage::Get(attributes)),
    );
    if udp_only {
        // The crate drops NLA_F_NESTED from attributes it does not know, and the kernel parses
        // CTA_FILTER strictly; so the filter goes last, as bytes, and the length is fixed up.
        let flags = DefaultNla::new(CTA_FILTER_ORIG_FLAGS, CTA_FILTER_FLAG_PROTO_NUM.to_ne_bytes().to_vec());
        let mut filter = vec![0; 4 + flags.buffer_len()];
        flags.emit(&mut filter[4..]);
        let filter_length = u16::try_from(filter.len()).unwrap_or(u16::MAX);
        filter[..2].copy_from_slice(&filter_length.to_ne_bytes());
        filter[2..4].copy_from_slice(&(CTA_FILTER | NLA_F_NESTED).to_ne_bytes());
        bytes.extend(filter);
        let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        bytes[..4].copy_from_slice(&length.to_ne_bytes());
    }
    bytes
}

/// A request to delete one entry, named by its full original tuple (and zone), acked.
///
/// A delete without a tuple would flush the whole table; this builder always names one.
pub fn delete_request(entry: &KernelEntry, sequence: u32) -> Vec<u8> {
    let original = entry.entry.original;
    let tuple = vec![
        NetlinkTuple::Ip(vec![
            IPTuple::SourceAddress(original.source.ip()),
            IPTuple::DestinationAddress(original.destination.ip()),
        ]),
        NetlinkTuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(entry.entry.protocol.0)),
            ProtoTuple::SourcePort(original.source.port()),
            ProtoTuple::DestinationPort(original.destination.port()),
        ]),
    ];
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple)];
    if let Some(zone) = entry.zone {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, zone.to_be_bytes().to_vec())));
    }
    serialize(
        NLM_F_REQUEST | NLM_F_ACK,
        sequence,
        NetfilterMessage::new(
            family_header(IpFamily::of(&original.source.ip())),
            ConntrackMessage::Delete(attributes),
        ),
    )
}

/// `NFNL_SUBSYS_CTNETLINK`, the high byte of a conntrack message's type.
const SUBSYSTEM_CONNTRACK: u16 = 1;
/// The length of a netlink message header.
const HEADER_LENGTH: usize = 16;

/// Parses every netlink message of one received datagram. A conntrack message this crate
/// cannot decode becomes an entry without tuples (skipped), not an error for the whole dump.
pub fn parse_replies(mut bytes: &[u8]) -> Result<Vec<Reply>, ConntrackError> {
    let mut replies = Vec::new();
    while bytes.len() >= HEADER_LENGTH {
        let length = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if !(HEADER_LENGTH..=bytes.len()).contains(&length) {
            return Err(ConntrackError::Decode(format!(
                "netlink message of length {length} in {} bytes",
                bytes.len()
            )));
        }
        let message_type = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let sequence = u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        match NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..length]) {
            Ok(message) => match message.payload {
                NetlinkPayload::Done(_) => replies.push(Reply::Done { sequence }),
                NetlinkPayload::Error(error) => match error.code {
                    None => replies.push(Reply::Ack { sequence }),
                    Some(code) => replies.push(Reply::Error { sequence, errno: code.get().abs() }),
                },
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                    ..
                }) => replies.push(Reply::Entry { sequence, entry: entry_of(&attributes) }),
                _ => {}
            },
            Err(_) if message_type >> 8 == SUBSYSTEM_CONNTRACK => {
                replies.push(Reply::Entry { sequence, entry: None });
            }
            Err(e) => return Err(ConntrackError::Decode(e.to_string())),
        }
        // Messages are 4-byte aligned within a datagram.
        let aligned = (length + 3) & !3;
        bytes = &bytes[aligned.min(bytes.len())..];
    }
    Ok(replies)
}

/// The entry a dumped message describes, when both tuples are complete.
pub fn entry_of(attributes: &[ConntrackAttribute]) -> Option<KernelEntry> {
    let mut original = None;
    let mut reply = None;
    let mut zone = None;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => original = tuple_of(tuple),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = tuple_of(tuple),
            ConntrackAttribute::Other(nla)
                if nla.kind() & NLA_TYPE_MASK == CTA_ZONE && nla.value_len() == 2 =>
            {
                let mut value = [0; 2];
                nla.emit_value(&mut value);
                zone = Some(u16::from_be_bytes(value)).filter(|z| *z != 0);
            }
            _ => {}
        }
    }
    let ((protocol, original), (_, reply)) = (original?, reply?);
    Some(KernelEntry { entry: Entry { protocol, original, reply }, zone })
}

fn tuple_of(parts: &[NetlinkTuple]) -> Option<(IpProtocol, Tuple)> {
    let (mut source, mut destination): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    let (mut protocol, mut source_port, mut destination_port) = (None, 0, 0);
    for part in parts {
        match part {
            NetlinkTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => source = Some(*a),
                        IPTuple::DestinationAddress(a) => destination = Some(*a),
                        _ => {}
                    }
                }
            }
            NetlinkTuple::Proto(fields) => {
                for field in fields {
                    match field {
                        ProtoTuple::Protocol(p) => protocol = Some(IpProtocol(u8::from(*p))),
                        ProtoTuple::SourcePort(p) => source_port = *p,
                        ProtoTuple::DestinationPort(p) => destination_port = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        protocol?,
        Tuple {
            source: SocketAddr::new(source?, source_port),
            destination: SocketAddr::new(destination?, destination_port),
        },
    ))
}
