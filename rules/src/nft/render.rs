//! The renderer: Service ports with endpoints → the desired ruleset for this node.

use std::collections::BTreeSet;

use super::ir::{
    BaseChain, ChainDecl, ChainType, DataType, Element, ElementValue, Expr, Family, Hook, Rule, Ruleset,
    SetData, SetDecl, SetKey, Statement, Table, Value, Verdict,
};
use super::names::{self, TABLE};
use crate::model::{IpFamily, NodeContext, Protocol, ServicePortEndpoints};
use crate::select::cluster_endpoints;

/// The priority nft calls `dstnat`: where DNAT happens.
const PRIORITY_DSTNAT: i32 = -100;
/// The priority nft calls `filter`.
const PRIORITY_FILTER: i32 = 0;
/// The priority nft calls `srcnat`: where masquerading happens.
const PRIORITY_SRCNAT: i32 = 100;

/// Renders kproxy's tables, one per IP family, for the given Service ports.
///
/// For each ClusterIP frontend (cluster IP . protocol . port) the selected endpoints
/// ([`cluster_endpoints`]) fill slots `0..N` of `endpoints-<proto>`, and `service-ips` sends
/// the frontend to `pick-<proto>-<N>`, which DNATs to slot `numgen random mod N`: each endpoint
/// with probability 1/N, the nftables form of kube-proxy's iptables probability cascade. A
/// frontend without endpoints goes to `no-endpoint-services` instead and is rejected.
pub fn render(ports: &[ServicePortEndpoints], node: &NodeContext) -> Ruleset {
    Ruleset { tables: IpFamily::ALL.iter().map(|family| render_table(ports, node, *family)).collect() }
}

fn render_table(ports: &[ServicePortEndpoints], node: &NodeContext, ip_family: IpFamily) -> Table {
    let family = Family::from(ip_family);
    let mut table = skeleton(family, node);
    let mut pick_chains = BTreeSet::new();

    for service_port in ports {
        let port = &service_port.port;
        let protocol = port.name.protocol;
        let comment = names::port_comment(&port.name);
        let selection = cluster_endpoints(&service_port.endpoints, ip_family, node);
        for cluster_ip in port.service.cluster_ips.iter().filter(|ip| IpFamily::of(ip) == ip_family) {
            table.add_element(
                names::CLUSTER_IPS,
                vec![Value::Addr(*cluster_ip)],
                Element { value: None, comment: Some(port.name.service.to_string()) },
            );
            let frontend = vec![Value::Addr(*cluster_ip), Value::Proto(protocol), Value::Port(port.port)];
            if selection.endpoints.is_empty() {
                table.add_element(
                    names::NO_ENDPOINT_SERVICES,
                    frontend,
                    verdict(Verdict::Goto(names::REJECT_CHAIN.into()), &comment),
                );
                continue;
            }
            let count = selection.endpoints.len();
            let pick = names::pick_chain(protocol, count);
            pick_chains.insert((protocol, count));
            table.add_element(names::SERVICE_IPS, frontend.clone(), verdict(Verdict::Goto(pick), &comment));
            for (slot, endpoint) in selection.endpoints.iter().enumerate() {
                let mut key = frontend.clone();
                key.push(Value::Int(u32::try_from(slot).unwrap_or(u32::MAX)));
                table.add_element(
                    &names::endpoints_map(protocol),
                    key,
                    Element {
                        value: Some(ElementValue::Data(vec![
                            Value::Addr(endpoint.address),
                            Value::Port(endpoint.port),
                        ])),
                        comment: Some(comment.clone()),
                    },
                );
                table.add_element(
                    names::HAIRPIN,
                    vec![Value::Addr(endpoint.address), Value::Addr(endpoint.address)],
                    Element { value: None, comment: None },
                );
            }
        }
    }

    for (protocol, count) in pick_chains {
        let modulus = u32::try_from(count).unwrap_or(u32::MAX);
        table.add_chain(
            plain_chain(&names::pick_chain(protocol, count)),
            vec![Rule::new(vec![
                Statement::L4proto(protocol),
                Statement::DnatMap {
                    key: vec![Expr::Daddr, Expr::L4proto, Expr::ThDport, Expr::NumgenRandom { modulus }],
                    map: names::endpoints_map(protocol),
                },
            ])],
        );
    }
    table
}

fn verdict(verdict: Verdict, comment: &str) -> Element {
    Element { value: Some(ElementValue::Verdict(verdict)), comment: Some(comment.into()) }
}

fn plain_chain(name: &str) -> ChainDecl {
    ChainDecl { name: name.into(), base: None, comment: None }
}

fn base_chain(name: &str, chain_type: ChainType, hook: Hook, priority: i32) -> ChainDecl {
    ChainDecl { name: name.into(), base: Some(BaseChain { chain_type, hook, priority }), comment: None }
}

/// The fixed part of the table: base chains, dispatch chains, and the declared sets and maps.
fn skeleton(family: Family, node: &NodeContext) -> Table {
    let mut table = Table::new(family, TABLE, Some(format!("kproxy rules for node {}", node.node_name)));
    let frontend_key = || vec![Expr::Daddr, Expr::L4proto, Expr::ThDport];
    let ct_new_jump =
        |chain: &str| Rule::new(vec![Statement::CtStateNew, Statement::Verdict(Verdict::Jump(chain.into()))]);
    let jump_services = || vec![Rule::new(vec![Statement::Verdict(Verdict::Jump(names::SERVICES.into()))])];

    table.add_chain(
        base_chain(names::NAT_PREROUTING, ChainType::Nat, Hook::Prerouting, PRIORITY_DSTNAT),
        jump_services(),
    );
    table.add_chain(
        base_chain(names::NAT_OUTPUT, ChainType::Nat, Hook::Output, PRIORITY_DSTNAT),
        jump_services(),
    );
    table.add_chain(
        base_chain(names::NAT_POSTROUTING, ChainType::Nat, Hook::Postrouting, PRIORITY_SRCNAT),
        vec![
            Rule::new(vec![
                Statement::CtStatusDnat,
                Statement::InSet { key: vec![Expr::Saddr, Expr::Daddr], set: names::HAIRPIN.into() },
                Statement::Masquerade,
            ])
            .with_comment("hairpin: a pod reaching itself through a Service"),
        ],
    );
    let filter_rules =
        || vec![ct_new_jump(names::SERVICE_ENDPOINTS_CHECK), ct_new_jump(names::CLUSTER_IPS_CHECK)];
    table.add_chain(
        base_chain(names::FILTER_FORWARD, ChainType::Filter, Hook::Forward, PRIORITY_FILTER),
        filter_rules(),
    );
    table.add_chain(
        base_chain(names::FILTER_OUTPUT, ChainType::Filter, Hook::Output, PRIORITY_FILTER),
        filter_rules(),
    );

    table.add_chain(
        plain_chain(names::SERVICES),
        vec![Rule::new(vec![Statement::VerdictMap { key: frontend_key(), map: names::SERVICE_IPS.into() }])],
    );
    table.add_chain(
        plain_chain(names::SERVICE_ENDPOINTS_CHECK),
        vec![Rule::new(vec![Statement::VerdictMap {
            key: frontend_key(),
            map: names::NO_ENDPOINT_SERVICES.into(),
        }])],
    );
    let goto_reject = || Statement::Verdict(Verdict::Goto(names::REJECT_CHAIN.into()));
    table.add_chain(
        plain_chain(names::CLUSTER_IPS_CHECK),
        vec![
            Rule::new(vec![
                Statement::InSet { key: vec![Expr::Daddr], set: names::CLUSTER_IPS.into() },
                goto_reject(),
            ])
            .with_comment("reject traffic to ports a ClusterIP does not serve"),
        ],
    );
    table.add_chain(
        plain_chain(names::REJECT_CHAIN),
        vec![
            Rule::new(vec![Statement::L4proto(Protocol::Tcp), Statement::RejectTcpReset])
                .with_comment("TCP: a reset, never rate-limited like ICMP errors"),
            Rule::new(vec![Statement::Reject]),
        ],
    );

    let frontend_types = vec![DataType::Addr, DataType::InetProto, DataType::InetService];
    table.add_set(SetDecl {
        name: names::SERVICE_IPS.into(),
        key: SetKey::Types(frontend_types.clone()),
        data: Some(SetData::Verdict),
        comment: Some("ClusterIP frontends with endpoints".into()),
    });
    table.add_set(SetDecl {
        name: names::NO_ENDPOINT_SERVICES.into(),
        key: SetKey::Types(frontend_types),
        data: Some(SetData::Verdict),
        comment: Some("frontends without endpoints".into()),
    });
    table.add_set(SetDecl {
        name: names::CLUSTER_IPS.into(),
        key: SetKey::Types(vec![DataType::Addr]),
        data: None,
        comment: Some("active ClusterIPs".into()),
    });
    table.add_set(SetDecl {
        name: names::HAIRPIN.into(),
        key: SetKey::Types(vec![DataType::Addr, DataType::Addr]),
        data: None,
        comment: Some("endpoint . endpoint, masqueraded when a pod reaches itself".into()),
    });
    for protocol in Protocol::ALL {
        table.add_set(SetDecl {
            name: names::endpoints_map(protocol),
            key: SetKey::Typeof(vec![
                Expr::Daddr,
                Expr::L4proto,
                Expr::ThDport,
                Expr::NumgenRandom { modulus: 1 },
            ]),
            data: Some(SetData::Typeof(vec![Expr::Daddr, Expr::Dport(protocol)])),
            comment: Some(format!("{protocol} frontend . slot to endpoint")),
        });
    }
    table
}
