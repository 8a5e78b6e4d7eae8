//! `kproxy debug explain`: walks a packet through the rendered ruleset, the tracer over the
//! typed IR that kube-proxy's tests keep for their own rules (`nftablesTracer`).
//!
//! The walk follows the hooks a new connection meets: the source-range check before DNAT,
//! the nat chain (`nat-prerouting` for packets from pods and other hosts, `nat-output` for the
//! node's own), then, when nothing rewrote the destination, the filter chains that reject or
//! drop. Jumps, gotos and verdict maps are followed; a random choice (`numgen`) contributes
//! every branch with its probability; a hash choice (`jhash`) is computed exactly as the kernel
//! computes it, so `--from` shows the endpoint a client lands on. Statements the tracer does
//! not know make it stop with an error rather than guess.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::{IpFamily, Protocol};
use crate::nft::{ElementValue, Expr, Ruleset, Statement, Table, Value, Verdict, names};

/// The new connection to explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The client address, when known; needed for hashing schedulers and source ranges.
    pub source: Option<IpAddr>,
    /// The destination address.
    pub destination: IpAddr,
    /// The protocol.
    pub protocol: Protocol,
    /// The destination port.
    pub port: u16,
    /// Sent by the node itself (the output hook) rather than arriving from a pod or host.
    pub from_node: bool,
}

/// Where the connection ends up.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// DNAT to one of these endpoints.
    Endpoints(Vec<Candidate>),
    /// Refused: a TCP reset or ICMP port-unreachable.
    Reject,
    /// Dropped: the client sees a timeout.
    Drop,
    /// Not a frontend kproxy programs; the packet goes on unchanged.
    NotAService,
}

/// One endpoint the connection may go to.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// The chance a new connection goes there (summed over slots).
    pub probability: f64,
}

/// The walk's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The Service port the frontend belongs to (an element comment), when one matched.
    pub service_port: Option<String>,
    /// The chains the packet went through, in order.
    pub path: Vec<String>,
    /// Where it ends up.
    pub outcome: Outcome,
    /// How the endpoint is chosen, in words.
    pub selection: Option<String>,
    /// Whether the source address is rewritten (masqueraded) on the way out.
    pub masquerade: bool,
}

/// The tracer met a statement it does not interpret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("chain {chain}: cannot trace {statement}")]
pub struct TraceError {
    /// The chain.
    pub chain: String,
    /// The statement, as debug text.
    pub statement: String,
}

/// Explains where `packet` goes under `ruleset`.
pub fn explain(ruleset: &Ruleset, packet: &Packet) -> Result<Explanation, TraceError> {
    let family = IpFamily::of(&packet.destination);
    let Some(table) = ruleset.tables.iter().find(|t| t.id.family == family.into()) else {
        return Ok(Explanation {
            service_port: None,
            path: Vec::new(),
            outcome: Outcome::NotAService,
            selection: None,
            masquerade: false,
        });
    };
    let mut walk =
        Walk { table, packet, path: Vec::new(), service_port: None, masquerade: false, selection: None };
    let firewall = if packet.from_node { names::FILTER_OUTPUT_PRE_DNAT } else { names::FILTER_PREROUTING };
    if let Flow::Stop(outcome) = walk.chain(firewall)? {
        return Ok(walk.finish(outcome));
    }
    let nat = if packet.from_node { names::NAT_OUTPUT } else { names::NAT_PREROUTING };
    match walk.chain(nat)? {
        Flow::Stop(outcome) => return Ok(walk.finish(outcome)),
        Flow::Continue => {}
    }
    // Not rewritten: the filter chains decide. Traffic to a node port ends on this host
    // (input); everything else is routed (forward) or sent (output).
    let on_node_port_ip = table
        .sets
        .get(names::NODEPORT_IPS)
        .is_some_and(|s| s.elements.contains_key(&vec![Value::Addr(packet.destination)]));
    let filter = match (packet.from_node, on_node_port_ip) {
        (true, _) => names::FILTER_OUTPUT,
        (false, true) => names::FILTER_INPUT,
        (false, false) => names::FILTER_FORWARD,
    };
    let outcome = match walk.chain(filter)? {
        Flow::Stop(outcome) => outcome,
        Flow::Continue => Outcome::NotAService,
    };
    Ok(walk.finish(outcome))
}

enum Flow {
    /// Evaluation goes on after the chain (it returned, or fell off its end).
    Continue,
    /// A final verdict or a DNAT.
    Stop(Outcome),
}

struct Walk<'a> {
    table: &'a Table,
    packet: &'a Packet,
    path: Vec<String>,
    service_port: Option<String>,
    masquerade: bool,
    selection: Option<String>,
}

impl Walk<'_> {
    fn finish(self, outcome: Outcome) -> Explanation {
        let masquerade = self.masquerade || self.hairpin(&outcome);
        Explanation {
            service_port: self.service_port,
            path: self.path,
            outcome,
            selection: self.selection,
            masquerade,
        }
    }

    /// A pod reaching itself is masqueraded by the hairpin rule.
    fn hairpin(&self, outcome: &Outcome) -> bool {
        let (Outcome::Endpoints(candidates), Some(source)) = (outcome, self.packet.source) else {
            return false;
        };
        candidates.len() == 1 && candidates[0].endpoint.ip() == source && candidates[0].probability >= 1.0
    }

    fn error(chain: &str, statement: &Statement) -> TraceError {
        TraceError { chain: chain.into(), statement: format!("{statement:?}") }
    }

    fn chain(&mut self, name: &str) -> Result<Flow, TraceError> {
        let Some(chain) = self.table.chains.get(name) else { return Ok(Flow::Continue) };
        self.path.push(name.to_string());
        'rules: for rule in &chain.rules {
            for statement in &rule.statements {
                match statement {
                    Statement::CtStateNew | Statement::CtStatusDnat => {}
                    Statement::L4proto(protocol) => {
                        if *protocol != self.packet.protocol {
                            continue 'rules;
                        }
                    }
                    Statement::InSet { key, set } => {
                        // A key needing the unknown client address matches nothing.
                        let Some(values) = self.key(key) else { continue 'rules };
                        // Dynamic sets (affinity) are filled by traffic: empty for a new client.
                        let hit = self.table.sets.get(set).is_some_and(|s| s.elements.contains_key(&values));
                        if !hit {
                            continue 'rules;
                        }
                    }
                    Statement::SaddrInPrefixes { prefixes, negate } => {
                        let inside =
                            self.packet.source.is_some_and(|s| prefixes.iter().any(|p| p.contains(&s)));
                        if inside == *negate {
                            continue 'rules;
                        }
                    }
                    Statement::FibSaddrLocal => {
                        if !self.packet.from_node {
                            continue 'rules;
                        }
                    }
                    Statement::MarkSet(_) => self.masquerade = true,
                    Statement::MarkClear(_) | Statement::MarkToggle(_) | Statement::UpdateSet { .. } => {}
                    Statement::Masquerade => {}
                    Statement::VerdictMap { key, map } => {
                        let Some(values) = self.key(key) else { return Err(Self::error(name, statement)) };
                        let element = self.table.sets.get(map).and_then(|s| s.elements.get(&values));
                        let Some(element) = element else { continue 'rules };
                        if self.service_port.is_none() {
                            self.service_port = element.comment.as_deref().map(str::to_string);
                        }
                        match &element.value {
                            Some(ElementValue::Verdict(verdict)) => match self.verdict(verdict)? {
                                Some(flow) => return Ok(flow),
                                None => continue 'rules,
                            },
                            _ => return Err(Self::error(name, statement)),
                        }
                    }
                    Statement::DnatMap { key, map } => {
                        return Ok(Flow::Stop(self.dnat_map(name, statement, key, map)?));
                    }
                    Statement::DnatTo { address, port } => {
                        let endpoint = SocketAddr::new(*address, *port);
                        return Ok(Flow::Stop(Outcome::Endpoints(vec![Candidate {
                            endpoint,
                            probability: 1.0,
                        }])));
                    }
                    Statement::NumgenVmap { chains } => {
                        self.selection.get_or_insert_with(|| format!("random among {} endpoints (new clients; a known client keeps its endpoint: session affinity)", chains.len()));
                        let share = 1.0 / chains.len() as f64;
                        let mut found = Vec::new();
                        for target in chains {
                            if let Flow::Stop(Outcome::Endpoints(candidates)) = self.chain(target)? {
                                found.extend(
                                    candidates.into_iter().map(|c| (c.endpoint, c.probability * share)),
                                );
                            }
                        }
                        return Ok(Flow::Stop(Outcome::Endpoints(merge(found))));
                    }
                    Statement::Reject | Statement::RejectTcpReset => return Ok(Flow::Stop(Outcome::Reject)),
                    Statement::Verdict(verdict) => match self.verdict(verdict)? {
                        Some(flow) => return Ok(flow),
                        None => continue 'rules,
                    },
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Follows a verdict; `None` means evaluation goes on with the next rule.
    fn verdict(&mut self, verdict: &Verdict) -> Result<Option<Flow>, TraceError> {
        Ok(match verdict {
            Verdict::Accept => Some(Flow::Stop(Outcome::NotAService)),
            Verdict::Drop => Some(Flow::Stop(Outcome::Drop)),
            Verdict::Return => Some(Flow::Continue),
            Verdict::Jump(target) => match self.chain(target)? {
                Flow::Stop(outcome) => Some(Flow::Stop(outcome)),
                Flow::Continue => None,
            },
            Verdict::Goto(target) => Some(self.chain(target)?),
        })
    }

    /// The packet's values for a key made of packet fields only.
    fn key(&self, key: &[Expr]) -> Option<Vec<Value>> {
        key.iter()
            .map(|expr| match expr {
                Expr::Daddr => Some(Value::Addr(self.packet.destination)),
                Expr::Saddr => self.packet.source.map(Value::Addr),
                Expr::L4proto => Some(Value::Proto(self.packet.protocol)),
                Expr::ThDport | Expr::Dport(_) => Some(Value::Port(self.packet.port)),
                Expr::NumgenRandom { .. } | Expr::NumgenInc { .. } | Expr::SaddrHash { .. } => None,
            })
            .collect()
    }

    /// A DNAT through a slot map: every slot with its chance, or the one slot a hash picks.
    fn dnat_map(
        &mut self,
        chain: &str,
        statement: &Statement,
        key: &[Expr],
        map: &str,
    ) -> Result<Outcome, TraceError> {
        let (choice, fixed) = key.split_last().ok_or_else(|| Self::error(chain, statement))?;
        let prefix = self.key(fixed).ok_or_else(|| Self::error(chain, statement))?;
        let endpoint_of = |slot: u32| -> Option<SocketAddr> {
            let mut k = prefix.clone();
            k.push(Value::Int(slot));
            match &self.table.sets.get(map)?.elements.get(&k)?.value {
                Some(ElementValue::Data(data)) => match data.as_slice() {
                    [Value::Addr(address), Value::Port(port)] => Some(SocketAddr::new(*address, *port)),
                    _ => None,
                },
                _ => None,
            }
        };
        let (modulus, hashed) = match choice {
            Expr::NumgenRandom { modulus } => {
                self.selection = Some(format!("random, each of {modulus} slots 1/{modulus} (numgen random)"));
                (*modulus, None)
            }
            Expr::NumgenInc { modulus } => {
                self.selection = Some(format!("round-robin over {modulus} endpoints (numgen inc)"));
                (*modulus, None)
            }
            Expr::SaddrHash { modulus, seed } => {
                let slot = self.packet.source.map(|s| jhash_slot(s, *seed, *modulus));
                self.selection = Some(match slot {
                    Some(slot) => format!("hash of the client address: slot {slot} of {modulus}"),
                    None => {
                        format!("hash of the client address over {modulus} slots (give --from to see which)")
                    }
                });
                (*modulus, slot)
            }
            _ => return Err(Self::error(chain, statement)),
        };
        let slots: Vec<u32> = match hashed {
            Some(slot) => vec![slot],
            None => (0..modulus).collect(),
        };
        let share = 1.0 / slots.len() as f64;
        let found = slots
            .into_iter()
            .map(|slot| {
                endpoint_of(slot)
                    .map(|endpoint| (endpoint, share))
                    .ok_or_else(|| Self::error(chain, statement))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outcome::Endpoints(merge(found)))
    }
}

/// Sums the chances of endpoints reached in several ways (several slots, several branches).
fn merge(found: Vec<(SocketAddr, f64)>) -> Vec<Candidate> {
    let mut merged: BTreeMap<SocketAddr, f64> = BTreeMap::new();
    for (endpoint, probability) in found {
        *merged.entry(endpoint).or_default() += probability;
    }
    merged.into_iter().map(|(endpoint, probability)| Candidate { endpoint, probability }).collect()
}

/// The slot `jhash ip saddr mod N seed S` gives: the kernel's `jhash()` (Bob Jenkins'
/// lookup3) over the address bytes, scaled into `0..N` as `nft_jhash_eval` does
/// (`reciprocal_scale`, not a remainder).
pub fn jhash_slot(source: IpAddr, seed: u32, modulus: u32) -> u32 {
    let bytes: Vec<u8> = match source {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let hash = jhash(&bytes, seed);
    u32::try_from((u64::from(hash) * u64::from(modulus)) >> 32).unwrap_or(0)
}

/// Linux's `jhash(key, length, initval)` (include/linux/jhash.h).
fn jhash(key: &[u8], initval: u32) -> u32 {
    const GOLDEN: u32 = 0xdead_beef;
    let length = u32::try_from(key.len()).unwrap_or(u32::MAX);
    let (mut a, mut b, mut c) = (GOLDEN.wrapping_add(length).wrapping_add(initval), 0u32, 0u32);
    b = b.wrapping_add(a);
    c = c.wrapping_add(a);
    let word = |bytes: &[u8]| -> u32 {
        bytes.iter().enumerate().fold(0u32, |w, (i, byte)| w | (u32::from(*byte) << (8 * i)))
    };
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        (a, b, c) = mix(a, b, c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word(&tail[0..4]));
    b = b.wrapping_add(word(&tail[4..8]));
    c = c.wrapping_add(word(&tail[8..12]));
    final_mix(a, b, c)
}

fn mix(mut a: u32, mut b: u32, mut c: u32) -> (u32, u32, u32) {
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(4);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(6);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(8);
    b = b.wrapping_add(a);
    a = a.wrapping_sub(c);
    a ^= c.rotate_left(16);
    c = c.wrapping_add(b);
    b = b.wrapping_sub(a);
    b ^= a.rotate_left(19);
    a = a.wrapping_add(c);
    c = c.wrapping_sub(b);
    c ^= b.rotate_left(4);
    b = b.wrapping_add(a);
    (a, b, c)
}

fn final_mix(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "service port: {}", self.service_port.as_deref().unwrap_or("(none)"))?;
        writeln!(f, "path:         {}", self.path.join(" -> "))?;
        match &self.outcome {
            Outcome::Endpoints(candidates) => {
                writeln!(f, "outcome:      DNAT")?;
                if let Some(selection) = &self.selection {
                    writeln!(f, "selection:    {selection}")?;
                }
                writeln!(f, "  {:<40} {:>11}  {:>18}", "endpoint", "probability", "iptables cascade")?;
                let mut left = 1.0f64;
                for candidate in candidates {
                    let cascade = if left > 0.0 { (candidate.probability / left).min(1.0) } else { 0.0 };
                    left -= candidate.probability;
                    writeln!(
                        f,
                        "  {:<40} {:>10.2}%  {:>18.4}",
                        candidate.endpoint.to_string(),
                        candidate.probability * 100.0,
                        cascade
                    )?;
                }
            }
            Outcome::Reject => {
                writeln!(f, "outcome:      REJECT (no endpoints: the client is refused at once)")?
            }
            Outcome::Drop => writeln!(f, "outcome:      DROP (the client times out)")?,
            Outcome::NotAService => {
                writeln!(f, "outcome:      not a Service frontend; the packet passes unchanged")?
            }
        }
        writeln!(
            f,
            "masquerade:   {}",
            if self.masquerade {
                "yes (the endpoint sees the node's address)"
            } else {
                "no (the endpoint sees the client's address)"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::jhash;

    #[test]
    fn jhash_should_give_lookup3s_published_test_vectors() {
        // Bob Jenkins' lookup3.c driver5 values for hashlittle(), which the kernel's jhash()
        // computes byte for byte.
        assert_eq!(jhash(b"", 0), 0xdead_beef);
        assert_eq!(jhash(b"", 0xdead_beef), 0xbd5b_7dde);
        assert_eq!(jhash(b"Four score and seven years ago", 0), 0x1777_0551);
        assert_eq!(jhash(b"Four score and seven years ago", 1), 0xcd62_8161);
    }
}
