//! The typed IR: one type per kernel object, statements as data, never text.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{IpFamily, Protocol};

/// An nftables table family. kproxy keeps one table per IP family, as kube-proxy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `ip`: IPv4.
    Ip,
    /// `ip6`: IPv6.
    Ip6,
}

impl Family {
    /// The family's keyword (`ip`, `ip6`), which is also its payload-expression prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
}

impl From<IpFamily> for Family {
    fn from(family: IpFamily) -> Family {
        match family {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        }
    }
}

/// A table's identity: family and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    /// The table's family.
    pub family: Family,
    /// The table's name.
    pub name: String,
}

/// Everything kproxy programs: its tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The tables, IPv4 first.
    pub tables: Vec<Table>,
}

/// A table with its chains and its sets and maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Family and name.
    pub id: TableRef,
    /// The table comment shown by `nft list table`.
    pub comment: Option<String>,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
}

/// How a base chain attaches to netfilter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BaseChain {
    /// `filter` or `nat`.
    pub chain_type: ChainType,
    /// The hook.
    pub hook: Hook,
    /// The priority; lower runs first (`dstnat` is -100, `filter` 0, `srcnat` 100).
    pub priority: i32,
}

/// A base chain's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`: sees only the first packet of each connection.
    Nat,
}

/// A netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `prerouting`: packets arriving from an interface.
    Prerouting,
    /// `input`: packets for this host.
    Input,
    /// `forward`: packets routed through this host.
    Forward,
    /// `output`: packets sent by this host.
    Output,
    /// `postrouting`: every packet leaving.
    Postrouting,
}

/// A chain's declaration: name, optional hook, comment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainDecl {
    /// The chain's name.
    pub name: String,
    /// Present for base chains (policy is always `accept`: kproxy never drops by default).
    pub base: Option<BaseChain>,
    /// A comment shown by `nft list`.
    pub comment: Option<String>,
}

/// A chain and its rules, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The declaration.
    pub decl: ChainDecl,
    /// The rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// A rule: statements evaluated left to right, and a comment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The statements.
    pub statements: Vec<Statement>,
    /// A comment shown by `nft list`.
    pub comment: Option<String>,
}

/// An expression yielding part of a lookup key or NAT data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `ip saddr` / `ip6 saddr`, after the table's family.
    Saddr,
    /// `ip daddr` / `ip6 daddr`.
    Daddr,
    /// `meta l4proto`.
    L4proto,
    /// `th dport`: the transport destination port of any protocol.
    ThDport,
    /// `tcp dport` and the like; map data must name the protocol (nft-shapes.md §6, trap 2).
    Dport(Protocol),
    /// `numgen random mod N`: a uniformly random number in `0..N` per new connection.
    NumgenRandom {
        /// N.
        modulus: u32,
    },
    /// `numgen inc mod N`: 0, 1, …, N-1, 0, … per new connection through this rule.
    NumgenInc {
        /// N.
        modulus: u32,
    },
    /// `jhash ip saddr mod N seed S`: a hash of the client address in `0..N`.
    SaddrHash {
        /// N.
        modulus: u32,
        /// The hash seed.
        seed: u32,
    },
}

/// A rule statement. Matches come first, a verdict or NAT statement last.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Statement {
    /// `ct state new`: the first packet of a connection.
    CtStateNew,
    /// `ct status dnat`: a connection whose destination was rewritten.
    CtStatusDnat,
    /// `meta l4proto <proto>`.
    L4proto(Protocol),
    /// `<key> @<set>`: the key is in the set.
    InSet {
        /// The concatenated key.
        key: Vec<Expr>,
        /// The set's name.
        set: String,
    },
    /// `<key> vmap @<map>`: jump or go to what the map says for the key.
    VerdictMap {
        /// The concatenated key.
        key: Vec<Expr>,
        /// The verdict map's name.
        map: String,
    },
    /// `dnat <family> to <key> map @<map>`: rewrite the destination to the map's address and port.
    DnatMap {
        /// The concatenated key.
        key: Vec<Expr>,
        /// The map's name.
        map: String,
    },
    /// `masquerade fully-random`: rewrite the source to the outgoing interface's address, with
    /// a random source port (avoids the port-reuse races of sequential allocation).
    Masquerade,
    /// `ip saddr { a, b }` (`!=` when `negate`): the source is (not) in one of the prefixes.
    SaddrInPrefixes {
        /// The prefixes.
        prefixes: Vec<IpNet>,
        /// Match sources outside the prefixes instead.
        negate: bool,
    },
    /// `fib saddr type local`: the packet comes from one of this host's addresses.
    FibSaddrLocal,
    /// `meta mark set meta mark or <bits>`.
    MarkSet(u32),
    /// `meta mark & <bits> == 0`: none of the bits is set.
    MarkClear(u32),
    /// `meta mark set meta mark xor <bits>`: clears bits known to be set.
    MarkToggle(u32),
    /// `numgen random mod N vmap { 0 : goto a, … }`: goes to one of the chains at random.
    NumgenVmap {
        /// The chains, one per slot.
        chains: Vec<String>,
    },
    /// `dnat <family> to <address>:<port>`: rewrite the destination to one endpoint.
    DnatTo {
        /// The endpoint address.
        address: IpAddr,
        /// The endpoint port.
        port: u16,
    },
    /// `update @<set> { <key> }`: add the key to a dynamic set, or refresh its timeout.
    UpdateSet {
        /// The key.
        key: Vec<Expr>,
        /// The set.
        set: String,
    },
    /// `reject`: ICMP port-unreachable (UDP clients see ECONNREFUSED on their next call).
    Reject,
    /// `reject with tcp reset`: a TCP RST, so the client's connect fails with ECONNREFUSED at
    /// once. Unlike ICMP errors, resets are not rate-limited per destination by the kernel.
    /// Must follow a `meta l4proto tcp` match.
    RejectTcpReset,
    /// A verdict.
    Verdict(Verdict),
}

/// A verdict.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `return`.
    Return,
    /// `jump <chain>`: evaluate the chain, then continue here.
    Jump(String),
    /// `goto <chain>`: evaluate the chain instead of the rest of this one.
    Goto(String),
}

impl Verdict {
    /// The chain this verdict continues in, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Verdict::Jump(chain) | Verdict::Goto(chain) => Some(chain),
            Verdict::Accept | Verdict::Drop | Verdict::Return => None,
        }
    }
}

/// A data type of a set key declared with `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `ipv4_addr` or `ipv6_addr`, after the table's family.
    Addr,
    /// `inet_proto`.
    InetProto,
    /// `inet_service`: a port.
    InetService,
}

/// How a set's key is declared.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetKey {
    /// `type a . b . c`.
    Types(Vec<DataType>),
    /// `typeof expr . expr`: needed where a key part (numgen) has no named type.
    Typeof(Vec<Expr>),
}

impl SetKey {
    /// How many values a key of this set concatenates.
    pub fn arity(&self) -> usize {
        match self {
            SetKey::Types(types) => types.len(),
            SetKey::Typeof(exprs) => exprs.len(),
        }
    }
}

/// What a map maps to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetData {
    /// `verdict`: a verdict map.
    Verdict,
    /// `typeof expr . expr`: NAT data such as address and port.
    Typeof(Vec<Expr>),
}

/// Whether a named set is a set or a map: nft addresses the two with different keywords.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetKind {
    /// A set: keys only.
    Set,
    /// A map: keys with data.
    Map,
}

impl SetKind {
    /// The nft keyword: `set` or `map`.
    pub fn keyword(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::Map => "map",
        }
    }
}

/// A set's or map's declaration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetDecl {
    /// The name.
    pub name: String,
    /// The key.
    pub key: SetKey,
    /// `None` for a set, the data type for a map.
    pub data: Option<SetData>,
    /// A comment shown by `nft list`.
    pub comment: Option<String>,
    /// For a set the datapath fills itself (`flags dynamic,timeout`): how long an element lives
    /// without being refreshed, in seconds. Such a set's elements are the kernel's, never the
    /// plan's: syncs leave them alone.
    pub timeout: Option<u32>,
}

impl SetDecl {
    /// Set or map.
    pub fn kind(&self) -> SetKind {
        if self.data.is_some() { SetKind::Map } else { SetKind::Set }
    }
}

/// A named set or map with its elements, by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// The declaration.
    pub decl: SetDecl,
    /// The elements; a set's have no value, a map's always do.
    pub elements: BTreeMap<Vec<Value>, Element>,
}

/// One value of a concatenated element key or of map data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// An address.
    Addr(IpAddr),
    /// A protocol.
    Proto(Protocol),
    /// A port.
    Port(u16),
    /// A plain number, such as a numgen slot.
    Int(u32),
}

/// What an element carries besides its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Element {
    /// The map value; `None` in a set.
    pub value: Option<ElementValue>,
    /// A comment shown by `nft list`: the Service port the element is for, shared by the
    /// elements of one Service port.
    pub comment: Option<Arc<str>>,
}

/// A map element's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ElementValue {
    /// A verdict-map value.
    Verdict(Verdict),
    /// NAT data: address and port.
    Data(Vec<Value>),
}

impl Table {
    /// An empty table.
    pub fn new(family: Family, name: &str, comment: Option<String>) -> Table {
        Table {
            id: TableRef { family, name: name.into() },
            comment,
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
        }
    }

    /// Declares a chain with its rules.
    pub fn add_chain(&mut self, decl: ChainDecl, rules: Vec<Rule>) {
        self.chains.insert(decl.name.clone(), Chain { decl, rules });
    }

    /// Declares an empty set or map.
    pub fn add_set(&mut self, decl: SetDecl) {
        self.sets.insert(decl.name.clone(), Set { decl, elements: BTreeMap::new() });
    }

    /// Gives a declared set or map its elements; of a repeated key, the first one listed
    /// stays.
    ///
    /// The elements are sorted, then built into the set's tree at once, which fills its nodes:
    /// inserted one by one they would be half full, and at 10k Services the ruleset would
    /// take half as much memory again (`cargo bench -p kproxy-rules --bench memory`).
    ///
    /// # Panics
    /// If the set was not declared: that is a renderer bug, caught by its unit tests.
    pub fn fill_set(&mut self, set: &str, mut elements: Vec<(Vec<Value>, Element)>) {
        elements.sort_by(|a, b| a.0.cmp(&b.0));
        elements.dedup_by(|later, earlier| later.0 == earlier.0);
        let target = self.sets.get_mut(set).unwrap_or_else(|| panic!("set {set} is not declared"));
        target.elements = elements.into_iter().collect();
    }
}

impl Statement {
    /// The named set or map the statement looks up or updates, if any.
    pub fn set(&self) -> Option<&str> {
        match self {
            Statement::InSet { set, .. } | Statement::UpdateSet { set, .. } => Some(set),
            Statement::VerdictMap { map, .. } | Statement::DnatMap { map, .. } => Some(map),
            _ => None,
        }
    }
}

impl Rule {
    /// The named sets and maps the rule uses.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.statements.iter().filter_map(Statement::set)
    }

    /// A rule without a comment.
    pub fn new(statements: Vec<Statement>) -> Rule {
        Rule { statements, comment: None }
    }

    /// The same rule with a comment.
    #[must_use]
    pub fn with_comment(mut self, comment: &str) -> Rule {
        self.comment = Some(comment.into());
        self
    }
}
