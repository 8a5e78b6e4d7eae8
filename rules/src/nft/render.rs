//! The renderer: Service ports with endpoints → the desired ruleset for this node.
//!
//! Data-driven where the semantics allow (reference/nft-shapes.md, shape D): a frontend is an
//! element of `service-ips` (or `service-nodeports`) going to a *shared* pick chain
//! `pick-[local-][nodeport-]<proto>-<N>`, which DNATs through `numgen random mod N` into the
//! matching endpoint map, keyed by the frontend and a slot. An endpoint change is therefore an
//! element change. A Service port gets chains of its own only where its semantics need
//! per-Service rules: `external-…`/`nodeport-…` for the Local external policy (short-circuits
//! for pods and the node itself), `firewall-…` for load-balancer source ranges, and, for
//! ClientIP session affinity, kube-proxy's per-endpoint shape (`service-…`, `local-…`,
//! `endpoint-…` chains and `affinity-…` sets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::ir::{
    BaseChain, ChainDecl, ChainType, DataType, Element, ElementValue, Expr, Family, Hook, Rule, Ruleset,
    SetData, SetDecl, SetKey, Statement, Table, Value, Verdict,
};
use super::names::{self, Keying, MASQUERADE_MARK, Scope, TABLE};
use crate::model::{
    Endpoint, IpFamily, NodeContext, Protocol, ServicePort, ServicePortEndpoints, TrafficPolicy,
};
use crate::sched::{HASH_SEED, Scheduler, maglev_table, maglev_table_size};
use crate::select::{cluster_endpoints, local_endpoints};

/// The priority nft calls `dstnat`: where DNAT happens.
const PRIORITY_DSTNAT: i32 = -100;
/// Source-range checks run before DNAT, while the destination is still the frontend.
const PRIORITY_PRE_DNAT: i32 = -110;
/// The priority nft calls `filter`.
const PRIORITY_FILTER: i32 = 0;
/// The priority nft calls `srcnat`: where masquerading happens.
const PRIORITY_SRCNAT: i32 = 100;

/// Renders kproxy's tables, one per IP family, for the given Service ports.
///
/// Each endpoint of a frontend is chosen with probability 1/N (`numgen random mod N`), the
/// nftables form of kube-proxy's iptables probability cascade. A frontend whose Service has no
/// usable endpoint is rejected; one whose Local policy finds no endpoint on this node is
/// dropped, as in kube-proxy.
pub fn render(ports: &[ServicePortEndpoints], node: &NodeContext) -> Ruleset {
    Ruleset { tables: IpFamily::ALL.iter().map(|family| render_table(ports, node, *family)).collect() }
}

fn render_table(ports: &[ServicePortEndpoints], node: &NodeContext, family: IpFamily) -> Table {
    let pod_cidrs: Vec<IpNet> =
        node.cluster_cidrs.iter().copied().filter(|c| IpFamily::of(&c.addr()) == family).collect();
    let table = skeleton(family.into(), node, &pod_cidrs);
    let mut builder =
        Builder { table, elements: BTreeMap::new(), family, pod_cidrs, pick_chains: BTreeSet::new() };
    for address in node.node_port_ips.iter().filter(|ip| IpFamily::of(ip) == family) {
        builder.add_element(names::NODEPORT_IPS, vec![Value::Addr(*address)], plain());
    }
    for port in ports {
        builder.port(port, node);
    }
    builder.finish()
}

/// Where a frontend's new connections go once its policy has chosen the endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A shared pick chain over slots of the frontend's own key.
    Slots(Scope),
    /// A chain of the Service port's own (session affinity).
    Chain(String),
}

/// A frontend: how it is keyed, and its key values.
#[derive(Clone, Copy)]
enum Frontend {
    /// Address . protocol . port.
    Address(IpAddr),
    /// Protocol . node port (on every node-port address).
    NodePort(u16),
}

struct Builder {
    table: Table,
    /// The elements of each set, in the order they were added; the table gets them at the end.
    elements: BTreeMap<String, Vec<(Vec<Value>, Element)>>,
    family: IpFamily,
    /// The pod CIDRs of this family.
    pod_cidrs: Vec<IpNet>,
    /// Shared pick chains in use: scope, keying, protocol, scheduler, slot count.
    pick_chains: BTreeSet<(Scope, Keying, Protocol, Scheduler, usize)>,
}

/// One Service port of one family, with its endpoint choices.
struct PortPlan<'a> {
    port: &'a ServicePort,
    scheduler: Scheduler,
    /// How many endpoints the slices list, whatever their conditions: sizes Maglev's table, so
    /// that an endpoint turning ready or not ready does not change the size and rehash everyone.
    listed: usize,
    comment: Arc<str>,
    cluster: Vec<&'a Endpoint>,
    local: Vec<&'a Endpoint>,
    cluster_target: Option<Target>,
    local_target: Option<Target>,
}

impl Builder {
    fn port(&mut self, service_port: &ServicePortEndpoints, node: &NodeContext) {
        let port = &service_port.port;
        let info = &port.service;
        let family = self.family;
        let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
            ips.iter().copied().filter(|ip| IpFamily::of(ip) == family).collect()
        };
        let cluster_ips = of_family(&info.cluster_ips);
        if cluster_ips.is_empty() {
            return; // the Service has no address of this family
        }
        let cluster = cluster_endpoints(&service_port.endpoints, self.family, node).endpoints;
        let uses_local = info.internal_policy == TrafficPolicy::Local
            || (info.external_policy == TrafficPolicy::Local && info.has_external_frontends(port.node_port));
        let local = if uses_local {
            local_endpoints(&service_port.endpoints, self.family, node).endpoints
        } else {
            Vec::new()
        };
        let mut plan = PortPlan {
            port,
            scheduler: info.scheduler.unwrap_or(node.default_scheduler),
            listed: service_port.endpoints.len(),
            comment: names::port_comment(&port.name).into(),
            cluster_target: (!cluster.is_empty()).then_some(Target::Slots(Scope::Cluster)),
            local_target: (!local.is_empty()).then_some(Target::Slots(Scope::Local)),
            cluster,
            local,
        };
        if let Some(timeout) = info.affinity_timeout {
            self.affinity_chains(&mut plan, timeout);
        }
        for endpoint in plan.cluster.iter().chain(&plan.local) {
            let pair = vec![Value::Addr(endpoint.address), Value::Addr(endpoint.address)];
            self.add_element(names::HAIRPIN, pair, plain());
        }

        for ip in &cluster_ips {
            self.add_element(
                names::CLUSTER_IPS,
                vec![Value::Addr(*ip)],
                commented(&Arc::from(port.name.service.to_string())),
            );
            self.dispatch(&plan, Frontend::Address(*ip), info.internal_policy, false);
        }
        let external_ips = of_family(&info.external_ips);
        let load_balancer_ips = of_family(&info.load_balancer_ips);
        for ip in external_ips.iter().chain(&load_balancer_ips) {
            self.dispatch(&plan, Frontend::Address(*ip), info.external_policy, true);
        }
        if !info.load_balancer_source_ranges.is_empty() && !load_balancer_ips.is_empty() {
            let firewall = names::service_port_chain("firewall", port);
            let ranges: Vec<IpNet> = info
                .load_balancer_source_ranges
                .iter()
                .copied()
                .filter(|r| IpFamily::of(&r.addr()) == family)
                .collect();
            let mut statements = Vec::new();
            if !ranges.is_empty() {
                statements.push(Statement::SaddrInPrefixes { prefixes: ranges, negate: true });
            }
            statements.push(Statement::Verdict(Verdict::Drop));
            self.table.add_chain(
                commented_chain(&firewall, &plan.comment),
                vec![Rule::new(statements).with_comment("loadBalancerSourceRanges")],
            );
            for ip in &load_balancer_ips {
                let key = address_key(*ip, port.name.protocol, port.port);
                self.add_element(
                    names::FIREWALL_IPS,
                    key,
                    verdict(Verdict::Goto(firewall.clone()), &plan.comment),
                );
            }
        }
        if let Some(node_port) = port.node_port {
            self.dispatch(&plan, Frontend::NodePort(node_port), info.external_policy, true);
        }
    }

    /// Sends one frontend to its endpoints under `policy`, or to a reject or a drop.
    fn dispatch(&mut self, plan: &PortPlan<'_>, frontend: Frontend, policy: TrafficPolicy, external: bool) {
        let protocol = plan.port.name.protocol;
        let (dispatch_map, no_endpoints_map, masquerade_set, key) = match frontend {
            Frontend::Address(ip) => (
                names::SERVICE_IPS,
                names::NO_ENDPOINT_SERVICES,
                names::MASQUERADE_FRONTENDS,
                address_key(ip, protocol, plan.port.port),
            ),
            Frontend::NodePort(port) => (
                names::SERVICE_NODEPORTS,
                names::NO_ENDPOINT_NODEPORTS,
                names::MASQUERADE_NODEPORTS,
                vec![Value::Proto(protocol), Value::Port(port)],
            ),
        };
        let Some(cluster_target) = plan.cluster_target.clone() else {
            let reject = verdict(Verdict::Goto(names::REJECT_CHAIN.into()), &plan.comment);
            self.add_element(no_endpoints_map, key, reject);
            return;
        };
        let drop_without_local = |builder: &mut Builder| {
            builder.add_element(no_endpoints_map, key.clone(), verdict(Verdict::Drop, &plan.comment));
        };
        match (policy, external) {
            (TrafficPolicy::Cluster, _) => {
                if external {
                    self.add_element(masquerade_set, key.clone(), commented(&plan.comment));
                }
                let chain = self.target_chain(plan, frontend, &cluster_target);
                self.add_element(dispatch_map, key, verdict(Verdict::Goto(chain), &plan.comment));
            }
            (TrafficPolicy::Local, false) => match plan.local_target.clone() {
                Some(local) => {
                    let chain = self.target_chain(plan, frontend, &local);
                    self.add_element(dispatch_map, key, verdict(Verdict::Goto(chain), &plan.comment));
                }
                None => drop_without_local(self),
            },
            (TrafficPolicy::Local, true) => {
                // kube-proxy's external chain: pods and the node itself get Cluster behaviour
                // (the node's traffic masqueraded, so replies come back through it); everyone
                // else only this node's endpoints, with the client address preserved.
                let kind = match frontend {
                    Frontend::Address(_) => "external",
                    Frontend::NodePort(_) => "nodeport",
                };
                let name = names::service_port_chain(kind, plan.port);
                let cluster_chain = self.target_chain(plan, frontend, &cluster_target);
                let mut rules = Vec::new();
                let pod_cidrs = self.pod_cidrs.clone();
                if !pod_cidrs.is_empty() {
                    rules.push(
                        Rule::new(vec![
                            Statement::SaddrInPrefixes { prefixes: pod_cidrs, negate: false },
                            goto(&cluster_chain),
                        ])
                        .with_comment("short-circuit pod traffic"),
                    );
                }
                rules.push(
                    Rule::new(vec![Statement::FibSaddrLocal, jump(names::MARK_FOR_MASQUERADE)])
                        .with_comment("masquerade local traffic"),
                );
                rules.push(
                    Rule::new(vec![Statement::FibSaddrLocal, goto(&cluster_chain)])
                        .with_comment("short-circuit local traffic"),
                );
                match plan.local_target.clone() {
                    Some(local) => {
                        let local_chain = self.target_chain(plan, frontend, &local);
                        rules.push(Rule::new(vec![goto(&local_chain)]));
                    }
                    None => drop_without_local(self),
                }
                if !self.table.chains.contains_key(&name) {
                    self.table.add_chain(commented_chain(&name, &plan.comment), rules);
                }
                self.add_element(dispatch_map, key, verdict(Verdict::Goto(name), &plan.comment));
            }
        }
    }

    /// The chain a frontend goes to for `target`; for slots, also the frontend's slot elements.
    fn target_chain(&mut self, plan: &PortPlan<'_>, frontend: Frontend, target: &Target) -> String {
        let scope = match target {
            Target::Chain(chain) => return chain.clone(),
            Target::Slots(scope) => *scope,
        };
        let endpoints = match scope {
            Scope::Cluster => &plan.cluster,
            Scope::Local => &plan.local,
        };
        let protocol = plan.port.name.protocol;
        let (keying, key) = match frontend {
            Frontend::Address(ip) => (Keying::Address, address_key(ip, protocol, plan.port.port)),
            Frontend::NodePort(port) => (Keying::NodePort, vec![Value::Proto(protocol), Value::Port(port)]),
        };
        let map = names::slot_map(scope, keying, protocol);
        let slots = slot_endpoints(plan.scheduler, endpoints, plan.listed);
        for (slot, endpoint) in slots.iter().enumerate() {
            let mut slot_key = key.clone();
            slot_key.push(Value::Int(u32::try_from(slot).unwrap_or(u32::MAX)));
            let data = ElementValue::Data(vec![Value::Addr(endpoint.address), Value::Port(endpoint.port)]);
            self.add_element(
                &map,
                slot_key,
                Element { value: Some(data), comment: Some(Arc::clone(&plan.comment)) },
            );
        }
        if plan.scheduler == Scheduler::RoundRobin {
            // numgen inc counts per rule: a rotation of its own for each Service port.
            let name = names::round_robin_chain(scope, keying, plan.port);
            let rule = pick_rule(scope, keying, protocol, Expr::NumgenInc { modulus: count(slots.len()) });
            self.table.add_chain(commented_chain(&name, &plan.comment), vec![rule]);
            return name;
        }
        self.pick_chains.insert((scope, keying, protocol, plan.scheduler, slots.len()));
        names::shared_pick_chain(scope, keying, protocol, plan.scheduler, slots.len())
    }

    /// kube-proxy's shape for ClientIP affinity: an affinity set and a chain per endpoint
    /// (`update @affinity { saddr }`, then DNAT), and per-port chains that first send a known
    /// client to its endpoint, then pick at random.
    fn affinity_chains(&mut self, plan: &mut PortPlan<'_>, timeout: u32) {
        let port = plan.port;
        let mut endpoints: Vec<&Endpoint> = plan.cluster.iter().chain(&plan.local).copied().collect();
        endpoints.sort();
        endpoints.dedup();
        for endpoint in &endpoints {
            let set = names::endpoint_object("affinity", port, endpoint);
            self.table.add_set(SetDecl {
                name: set.clone(),
                key: SetKey::Types(vec![DataType::Addr]),
                data: None,
                comment: Some(plan.comment.to_string()),
                timeout: Some(timeout),
            });
            self.table.add_chain(
                commented_chain(&names::endpoint_object("endpoint", port, endpoint), &plan.comment),
                vec![
                    Rule::new(vec![Statement::UpdateSet { key: vec![Expr::Saddr], set }]),
                    Rule::new(vec![
                        Statement::L4proto(port.name.protocol),
                        Statement::DnatTo { address: endpoint.address, port: endpoint.port },
                    ]),
                ],
            );
        }
        let mut chain_for = |kind: &str, chosen: &[&Endpoint]| -> Option<Target> {
            if chosen.is_empty() {
                return None;
            }
            let name = names::service_port_chain(kind, port);
            let mut rules: Vec<Rule> = chosen
                .iter()
                .map(|e| {
                    Rule::new(vec![
                        Statement::InSet {
                            key: vec![Expr::Saddr],
                            set: names::endpoint_object("affinity", port, e),
                        },
                        goto(&names::endpoint_object("endpoint", port, e)),
                    ])
                })
                .collect();
            rules.push(Rule::new(vec![Statement::NumgenVmap {
                chains: chosen.iter().map(|e| names::endpoint_object("endpoint", port, e)).collect(),
            }]));
            self.table.add_chain(commented_chain(&name, &plan.comment), rules);
            Some(Target::Chain(name))
        };
        plan.cluster_target = chain_for("service", &plan.cluster);
        plan.local_target = chain_for("local", &plan.local);
    }

    /// Adds an element to a set of the skeleton; of a repeated key, the first stays.
    fn add_element(&mut self, set: &str, key: Vec<Value>, element: Element) {
        match self.elements.get_mut(set) {
            Some(elements) => elements.push((key, element)),
            None => {
                self.elements.insert(set.to_string(), vec![(key, element)]);
            }
        }
    }

    fn finish(mut self) -> Table {
        for (set, elements) in std::mem::take(&mut self.elements) {
            self.table.fill_set(&set, elements);
        }
        for (scope, keying, protocol, scheduler, slots) in std::mem::take(&mut self.pick_chains) {
            let modulus = count(slots);
            let choice = match scheduler {
                Scheduler::SourceHash | Scheduler::Maglev => Expr::SaddrHash { modulus, seed: HASH_SEED },
                Scheduler::Random | Scheduler::RoundRobin => Expr::NumgenRandom { modulus },
            };
            self.table.add_chain(
                plain_chain(&names::shared_pick_chain(scope, keying, protocol, scheduler, slots)),
                vec![pick_rule(scope, keying, protocol, choice)],
            );
        }
        self.table
    }
}

/// The endpoint behind each slot: one slot per endpoint, except for Maglev, whose slots are
/// its lookup table, sized for the `listed` endpoints (at least the chosen ones).
fn slot_endpoints<'a>(scheduler: Scheduler, endpoints: &[&'a Endpoint], listed: usize) -> Vec<&'a Endpoint> {
    if scheduler != Scheduler::Maglev {
        return endpoints.to_vec();
    }
    let names: Vec<String> = endpoints.iter().map(|e| format!("{}:{}", e.address, e.port)).collect();
    let size = maglev_table_size(listed.max(endpoints.len()));
    maglev_table(&names, size).into_iter().map(|i| endpoints[i]).collect()
}

/// `meta l4proto P dnat to <frontend key> . <choice> map @<slot map>`.
fn pick_rule(scope: Scope, keying: Keying, protocol: Protocol, choice: Expr) -> Rule {
    let mut key = match keying {
        Keying::Address => vec![Expr::Daddr, Expr::L4proto, Expr::ThDport],
        Keying::NodePort => vec![Expr::L4proto, Expr::ThDport],
    };
    key.push(choice);
    Rule::new(vec![
        Statement::L4proto(protocol),
        Statement::DnatMap { key, map: names::slot_map(scope, keying, protocol) },
    ])
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn address_key(ip: IpAddr, protocol: Protocol, port: u16) -> Vec<Value> {
    vec![Value::Addr(ip), Value::Proto(protocol), Value::Port(port)]
}

fn verdict(verdict: Verdict, comment: &Arc<str>) -> Element {
    Element { value: Some(ElementValue::Verdict(verdict)), comment: Some(Arc::clone(comment)) }
}

fn commented(comment: &Arc<str>) -> Element {
    Element { value: None, comment: Some(Arc::clone(comment)) }
}

fn plain() -> Element {
    Element { value: None, comment: None }
}

fn goto(chain: &str) -> Statement {
    Statement::Verdict(Verdict::Goto(chain.into()))
}

fn jump(chain: &str) -> Statement {
    Statement::Verdict(Verdict::Jump(chain.into()))
}

fn plain_chain(name: &str) -> ChainDecl {
    ChainDecl { name: name.into(), base: None, comment: None }
}

fn commented_chain(name: &str, comment: &str) -> ChainDecl {
    ChainDecl { name: name.into(), base: None, comment: Some(comment.into()) }
}

fn base_chain(name: &str, chain_type: ChainType, hook: Hook, priority: i32) -> ChainDecl {
    ChainDecl { name: name.into(), base: Some(BaseChain { chain_type, hook, priority }), comment: None }
}

fn set(name: &str, key: SetKey, data: Option<SetData>, comment: &str) -> SetDecl {
    SetDecl { name: name.into(), key, data, comment: Some(comment.into()), timeout: None }
}

/// The fixed part of the table: base chains, dispatch chains, and the declared sets and maps.
fn skeleton(family: Family, node: &NodeContext, pod_cidrs: &[IpNet]) -> Table {
    let mut table = Table::new(family, TABLE, Some(format!("kproxy rules for node {}", node.node_name)));
    let frontend_key = || vec![Expr::Daddr, Expr::L4proto, Expr::ThDport];
    let nodeport_key = || vec![Expr::L4proto, Expr::ThDport];
    let ct_new_jump = |chain: &str| Rule::new(vec![Statement::CtStateNew, jump(chain)]);
    let jump_services = || vec![Rule::new(vec![jump(names::SERVICES)])];
    let on_nodeport_ips = || Statement::InSet { key: vec![Expr::Daddr], set: names::NODEPORT_IPS.into() };

    // Base chains, in hook order.
    let firewall = || vec![ct_new_jump(names::FIREWALL_CHECK)];
    table.add_chain(
        base_chain(names::FILTER_PREROUTING, ChainType::Filter, Hook::Prerouting, PRIORITY_PRE_DNAT),
        firewall(),
    );
    table.add_chain(
        base_chain(names::FILTER_OUTPUT_PRE_DNAT, ChainType::Filter, Hook::Output, PRIORITY_PRE_DNAT),
        firewall(),
    );
    table.add_chain(
        base_chain(names::NAT_PREROUTING, ChainType::Nat, Hook::Prerouting, PRIORITY_DSTNAT),
        jump_services(),
    );
    table.add_chain(
        base_chain(names::NAT_OUTPUT, ChainType::Nat, Hook::Output, PRIORITY_DSTNAT),
        jump_services(),
    );
    table.add_chain(
        base_chain(names::FILTER_INPUT, ChainType::Filter, Hook::Input, PRIORITY_FILTER),
        vec![ct_new_jump(names::NODEPORT_ENDPOINTS_CHECK), ct_new_jump(names::SERVICE_ENDPOINTS_CHECK)],
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
        base_chain(names::NAT_POSTROUTING, ChainType::Nat, Hook::Postrouting, PRIORITY_SRCNAT),
        vec![
            Rule::new(vec![
                Statement::CtStatusDnat,
                Statement::InSet { key: vec![Expr::Saddr, Expr::Daddr], set: names::HAIRPIN.into() },
                Statement::Masquerade,
            ])
            .with_comment("hairpin: a pod reaching itself through a Service"),
            Rule::new(vec![jump(names::MASQUERADING)]),
        ],
    );

    // Dispatch. Masquerade marks first, then the verdict maps.
    let mut services = Vec::new();
    let on_cluster_ips = || Statement::InSet { key: vec![Expr::Daddr], set: names::CLUSTER_IPS.into() };
    if node.masquerade_all {
        services.push(
            Rule::new(vec![on_cluster_ips(), jump(names::MARK_FOR_MASQUERADE)])
                .with_comment("masquerade-all"),
        );
    } else if !pod_cidrs.is_empty() {
        services.push(
            Rule::new(vec![
                on_cluster_ips(),
                Statement::SaddrInPrefixes { prefixes: pod_cidrs.to_vec(), negate: true },
                jump(names::MARK_FOR_MASQUERADE),
            ])
            .with_comment("masquerade traffic from outside the pod network"),
        );
    }
    services.push(
        Rule::new(vec![
            Statement::InSet { key: frontend_key(), set: names::MASQUERADE_FRONTENDS.into() },
            jump(names::MARK_FOR_MASQUERADE),
        ])
        .with_comment("masquerade external traffic (Cluster policy)"),
    );
    services.push(Rule::new(vec![
        on_nodeport_ips(),
        Statement::InSet { key: nodeport_key(), set: names::MASQUERADE_NODEPORTS.into() },
        jump(names::MARK_FOR_MASQUERADE),
    ]));
    services
        .push(Rule::new(vec![Statement::VerdictMap { key: frontend_key(), map: names::SERVICE_IPS.into() }]));
    services.push(Rule::new(vec![
        on_nodeport_ips(),
        Statement::VerdictMap { key: nodeport_key(), map: names::SERVICE_NODEPORTS.into() },
    ]));
    table.add_chain(plain_chain(names::SERVICES), services);
    table.add_chain(
        plain_chain(names::FIREWALL_CHECK),
        vec![Rule::new(vec![Statement::VerdictMap { key: frontend_key(), map: names::FIREWALL_IPS.into() }])],
    );
    table.add_chain(
        plain_chain(names::SERVICE_ENDPOINTS_CHECK),
        vec![Rule::new(vec![Statement::VerdictMap {
            key: frontend_key(),
            map: names::NO_ENDPOINT_SERVICES.into(),
        }])],
    );
    table.add_chain(
        plain_chain(names::NODEPORT_ENDPOINTS_CHECK),
        vec![Rule::new(vec![
            on_nodeport_ips(),
            Statement::VerdictMap { key: nodeport_key(), map: names::NO_ENDPOINT_NODEPORTS.into() },
        ])],
    );
    table.add_chain(
        plain_chain(names::CLUSTER_IPS_CHECK),
        vec![
            Rule::new(vec![on_cluster_ips(), goto(names::REJECT_CHAIN)])
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
    table.add_chain(
        plain_chain(names::MARK_FOR_MASQUERADE),
        vec![Rule::new(vec![Statement::MarkSet(MASQUERADE_MARK)])],
    );
    table.add_chain(
        plain_chain(names::MASQUERADING),
        vec![
            Rule::new(vec![Statement::MarkClear(MASQUERADE_MARK), Statement::Verdict(Verdict::Return)]),
            Rule::new(vec![Statement::MarkToggle(MASQUERADE_MARK)]),
            Rule::new(vec![Statement::Masquerade]),
        ],
    );

    let frontend_types = || SetKey::Types(vec![DataType::Addr, DataType::InetProto, DataType::InetService]);
    let nodeport_types = || SetKey::Types(vec![DataType::InetProto, DataType::InetService]);
    let verdicts = || Some(SetData::Verdict);
    table.add_set(set(names::SERVICE_IPS, frontend_types(), verdicts(), "frontends with endpoints"));
    table.add_set(set(names::SERVICE_NODEPORTS, nodeport_types(), verdicts(), "node ports with endpoints"));
    table.add_set(set(
        names::NO_ENDPOINT_SERVICES,
        frontend_types(),
        verdicts(),
        "frontends without endpoints",
    ));
    table.add_set(set(
        names::NO_ENDPOINT_NODEPORTS,
        nodeport_types(),
        verdicts(),
        "node ports without endpoints",
    ));
    table.add_set(set(
        names::FIREWALL_IPS,
        frontend_types(),
        verdicts(),
        "frontends with loadBalancerSourceRanges",
    ));
    table.add_set(set(names::MASQUERADE_FRONTENDS, frontend_types(), None, "external frontends masqueraded"));
    table.add_set(set(names::MASQUERADE_NODEPORTS, nodeport_types(), None, "node ports masqueraded"));
    table.add_set(set(names::CLUSTER_IPS, SetKey::Types(vec![DataType::Addr]), None, "active ClusterIPs"));
    table.add_set(set(
        names::NODEPORT_IPS,
        SetKey::Types(vec![DataType::Addr]),
        None,
        "addresses node ports are served on",
    ));
    table.add_set(set(
        names::HAIRPIN,
        SetKey::Types(vec![DataType::Addr, DataType::Addr]),
        None,
        "endpoint . endpoint, masqueraded when a pod reaches itself",
    ));
    for protocol in Protocol::ALL {
        for scope in [Scope::Cluster, Scope::Local] {
            for keying in [Keying::Address, Keying::NodePort] {
                let mut key = match keying {
                    Keying::Address => vec![Expr::Daddr, Expr::L4proto, Expr::ThDport],
                    Keying::NodePort => vec![Expr::L4proto, Expr::ThDport],
                };
                key.push(Expr::NumgenRandom { modulus: 1 });
                let what = match (scope, keying) {
                    (Scope::Cluster, Keying::Address) => "frontend . slot",
                    (Scope::Local, Keying::Address) => "frontend . slot, local endpoints",
                    (Scope::Cluster, Keying::NodePort) => "node port . slot",
                    (Scope::Local, Keying::NodePort) => "node port . slot, local endpoints",
                };
                table.add_set(set(
                    &names::slot_map(scope, keying, protocol),
                    SetKey::Typeof(key),
                    Some(SetData::Typeof(vec![Expr::Daddr, Expr::Dport(protocol)])),
                    &format!("{protocol} {what} to endpoint"),
                ));
            }
        }
    }
    table
}
