//! What one of kproxy's tables holds in the kernel, by name: the chains and sets that a rewrite
//! in place ([`Transaction::rewrite`](super::Transaction::rewrite)) must empty, keep or delete.
//! Read from `nft -j -t list table` (terse: without elements, which at 10k Services would be
//! nearly all of the output), or taken from a planned table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::ir::{SetKind, Table, TableRef};

/// The chains and sets of one table, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// The table.
    pub table: TableRef,
    /// Its chains.
    pub chains: BTreeSet<String>,
    /// Its sets and maps.
    pub sets: BTreeMap<String, ExistingSet>,
}

/// What a rewrite needs to know of an existing set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExistingSet {
    /// Set or map, for the keyword that addresses it.
    pub kind: SetKind,
    /// Whether the datapath fills it (`flags dynamic` or `timeout`): its elements are the
    /// kernel's, such as session affinity entries, and a rewrite keeps them.
    pub dynamic: bool,
    /// Its element timeout in seconds: an affinity set whose Service changed
    /// `timeoutSeconds` must be declared again.
    pub timeout: Option<u32>,
}

impl Inventory {
    /// The inventory of a planned table.
    pub fn of(table: &Table) -> Inventory {
        Inventory {
            table: table.id.clone(),
            chains: table.chains.keys().cloned().collect(),
            sets: table
                .sets
                .values()
                .map(|set| {
                    let existing = ExistingSet {
                        kind: set.decl.kind(),
                        dynamic: set.decl.timeout.is_some(),
                        timeout: set.decl.timeout,
                    };
                    (set.decl.name.clone(), existing)
                })
                .collect(),
        }
    }

    /// The inventory of `table` in `nft -j list table` output; `None` when the output does not
    /// hold that table.
    pub fn from_nft_json(table: &TableRef, json: &Json) -> Option<Inventory> {
        let objects = json.get("nftables")?.as_array()?;
        let ours = |object: &Json| {
            object.get("family").and_then(Json::as_str) == Some(table.family.as_str())
                && object.get("table").and_then(Json::as_str) == Some(table.name.as_str())
        };
        let name = |object: &Json| object.get("name").and_then(Json::as_str).map(str::to_string);
        let mut inventory =
            Inventory { table: table.clone(), chains: BTreeSet::new(), sets: BTreeMap::new() };
        let mut found = false;
        for object in objects {
            if let Some(listed) = object.get("table") {
                found |= listed.get("family").and_then(Json::as_str) == Some(table.family.as_str())
                    && name(listed).as_deref() == Some(table.name.as_str());
            } else if let Some(chain) = object.get("chain").filter(|c| ours(c)) {
                inventory.chains.extend(name(chain));
            } else if let Some((kind, set)) = object
                .get("set")
                .map(|s| (SetKind::Set, s))
                .or_else(|| object.get("map").map(|m| (SetKind::Map, m)))
                .filter(|(_, s)| ours(s))
                && let Some(name) = name(set)
            {
                let timeout = set.get("timeout").and_then(Json::as_u64).and_then(|t| u32::try_from(t).ok());
                inventory.sets.insert(name, ExistingSet { kind, dynamic: is_dynamic(set), timeout });
            }
        }
        found.then_some(inventory)
    }
}

/// Whether a set of nft's JSON is one the datapath fills (`flags dynamic` or `timeout`).
pub(super) fn is_dynamic(set: &Json) -> bool {
    set.get("flags")
        .and_then(Json::as_array)
        .is_some_and(|flags| flags.iter().any(|f| matches!(f.as_str(), Some("timeout" | "dynamic"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Family;

    /// What nft 1.0.6 prints for `nft -j -t list table ip t` (one table, a set, a dynamic set,
    /// a verdict map, a regular and a base chain, a rule).
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "t", "handle": 2}}, {"set": {"family": "ip", "name": "s", "table": "t", "type": ["ipv4_addr", "inet_service"], "handle": 3}}, {"set": {"family": "ip", "name": "d", "table": "t", "type": "ipv4_addr", "handle": 4, "flags": ["timeout"], "timeout": 3600}}, {"map": {"family": "ip", "name": "m", "table": "t", "type": "ipv4_addr", "handle": 5, "map": "verdict"}}, {"chain": {"family": "ip", "table": "t", "name": "c", "handle": 1}}, {"chain": {"family": "ip", "table": "t", "name": "b", "handle": 2, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 6, "expr": [{"counter": {"packets": 0, "bytes": 0}}]}}]}"#;

    fn table(family: Family, name: &str) -> TableRef {
        TableRef { family, name: name.into() }
    }

    #[test]
    fn from_nft_json_should_name_chains_and_sets_with_their_kind() {
        let json: Json = serde_json::from_str(LISTED).unwrap();
        let inventory = Inventory::from_nft_json(&table(Family::Ip, "t"), &json).unwrap();
        assert_eq!(inventory.chains, BTreeSet::from(["b".to_string(), "c".to_string()]));
        assert_eq!(
            inventory.sets,
            BTreeMap::from([
                ("d".to_string(), ExistingSet { kind: SetKind::Set, dynamic: true, timeout: Some(3600) }),
                ("m".to_string(), ExistingSet { kind: SetKind::Map, dynamic: false, timeout: None }),
                ("s".to_string(), ExistingSet { kind: SetKind::Set, dynamic: false, timeout: None }),
            ])
        );
    }

    #[test]
    fn from_nft_json_should_not_take_another_table_for_ours() {
        let json: Json = serde_json::from_str(LISTED).unwrap();
        assert_eq!(Inventory::from_nft_json(&table(Family::Ip6, "t"), &json), None);
        assert_eq!(Inventory::from_nft_json(&table(Family::Ip, "kproxy"), &json), None);
    }
}
