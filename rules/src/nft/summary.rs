//! A comparable summary of a table, built from the plan or parsed from `nft -j list table`,
//! for `kproxy debug diff`: which chains exist with how many rules, and each set's elements
//! as `key : value` text. Rules themselves are not compared as text: nft prints them back in
//! other words than it read (nft-shapes.md §6, trap 7). Elements of dynamic sets (affinity)
//! are the kernel's, never compared.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::Value as Json;

use super::inventory::is_dynamic;
use super::ir::{ElementValue, Table, Verdict};
use super::syntax::write_values;

/// What a table holds, in comparable form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSummary {
    /// `family name`, as `ip kproxy`.
    pub table: String,
    /// Chains and their rule counts.
    pub chains: BTreeMap<String, usize>,
    /// Sets and maps with their elements (`key` or `key : value`); dynamic sets have none.
    pub sets: BTreeMap<String, BTreeSet<String>>,
}

/// One difference between the desired and the actual table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The table is missing.
    MissingTable(String),
    /// A chain is missing, or has another number of rules.
    Chain {
        /// The chain.
        chain: String,
        /// Desired rule count (`None`: should not exist).
        desired: Option<usize>,
        /// Actual rule count (`None`: does not exist).
        actual: Option<usize>,
    },
    /// A set is missing or should not exist.
    Set {
        /// The set.
        set: String,
        /// Whether it should exist.
        desired: bool,
    },
    /// An element differs.
    Element {
        /// The set.
        set: String,
        /// The element text.
        element: String,
        /// Whether it should exist (`false`: it exists and should not).
        desired: bool,
    },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::MissingTable(table) => write!(f, "- table {table}"),
            Drift::Chain { chain, desired: Some(d), actual: None } => {
                write!(f, "- chain {chain} ({d} rules)")
            }
            Drift::Chain { chain, desired: None, actual: Some(a) } => {
                write!(f, "+ chain {chain} ({a} rules)")
            }
            Drift::Chain { chain, desired, actual } => {
                write!(
                    f,
                    "~ chain {chain}: {} rules desired, {} in the kernel",
                    desired.unwrap_or(0),
                    actual.unwrap_or(0)
                )
            }
            Drift::Set { set, desired: true } => write!(f, "- set {set}"),
            Drift::Set { set, desired: false } => write!(f, "+ set {set}"),
            Drift::Element { set, element, desired: true } => write!(f, "- {set}: {element}"),
            Drift::Element { set, element, desired: false } => write!(f, "+ {set}: {element}"),
        }
    }
}

impl TableSummary {
    /// The summary of a planned table.
    pub fn of(table: &Table) -> TableSummary {
        let chains = table.chains.values().map(|c| (c.decl.name.clone(), c.rules.len())).collect();
        let sets = table
            .sets
            .values()
            .map(|set| {
                let elements = if set.decl.timeout.is_some() {
                    BTreeSet::new()
                } else {
                    set.elements
                        .iter()
                        .map(|(key, element)| {
                            let mut text = String::new();
                            let _ = write_values(&mut text, key);
                            match &element.value {
                                None => {}
                                Some(ElementValue::Data(data)) => {
                                    text.push_str(" : ");
                                    let _ = write_values(&mut text, data);
                                }
                                Some(ElementValue::Verdict(verdict)) => {
                                    let _ = write!(text, " : {}", verdict_text(verdict));
                                }
                            }
                            text
                        })
                        .collect()
                };
                (set.decl.name.clone(), elements)
            })
            .collect();
        TableSummary { table: format!("{} {}", table.id.family.as_str(), table.id.name), chains, sets }
    }

    /// The summary of one table in `nft -j list table` output; `None` when it is not there.
    pub fn from_nft_json(table: &str, json: &Json) -> Option<TableSummary> {
        let objects = json.get("nftables")?.as_array()?;
        let mut summary = TableSummary { table: table.to_string(), ..TableSummary::default() };
        let mut found = false;
        for object in objects {
            if object.get("table").is_some() {
                found = true;
            } else if let Some(chain) = object.get("chain") {
                let name = chain.get("name").and_then(Json::as_str).unwrap_or_default();
                summary.chains.entry(name.to_string()).or_insert(0);
            } else if let Some(rule) = object.get("rule") {
                let chain = rule.get("chain").and_then(Json::as_str).unwrap_or_default();
                *summary.chains.entry(chain.to_string()).or_insert(0) += 1;
            } else if let Some(set) = object.get("set").or_else(|| object.get("map")) {
                let name = set.get("name").and_then(Json::as_str).unwrap_or_default().to_string();
                let elements = if is_dynamic(set) {
                    BTreeSet::new()
                } else {
                    set.get("elem").and_then(Json::as_array).into_iter().flatten().map(element_text).collect()
                };
                summary.sets.insert(name, elements);
            }
        }
        found.then_some(summary)
    }

    /// The differences from `self` (desired) to `actual`.
    pub fn drift(&self, actual: Option<&TableSummary>) -> Vec<Drift> {
        let Some(actual) = actual else { return vec![Drift::MissingTable(self.table.clone())] };
        let mut drift = Vec::new();
        let names: BTreeSet<&String> = self.chains.keys().chain(actual.chains.keys()).collect();
        for name in names {
            let (desired, actual) = (self.chains.get(name).copied(), actual.chains.get(name).copied());
            if desired != actual {
                drift.push(Drift::Chain { chain: name.clone(), desired, actual });
            }
        }
        let names: BTreeSet<&String> = self.sets.keys().chain(actual.sets.keys()).collect();
        for name in names {
            match (self.sets.get(name), actual.sets.get(name)) {
                (Some(_), None) => drift.push(Drift::Set { set: name.clone(), desired: true }),
                (None, Some(_)) => drift.push(Drift::Set { set: name.clone(), desired: false }),
                (Some(want), Some(have)) => {
                    for element in want.difference(have) {
                        drift.push(Drift::Element {
                            set: name.clone(),
                            element: element.clone(),
                            desired: true,
                        });
                    }
                    for element in have.difference(want) {
                        drift.push(Drift::Element {
                            set: name.clone(),
                            element: element.clone(),
                            desired: false,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        drift
    }
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(chain) => format!("jump {chain}"),
        Verdict::Goto(chain) => format!("goto {chain}"),
    }
}

/// One element of nft's JSON as `key` or `key : value`.
fn element_text(element: &Json) -> String {
    match element.as_array() {
        Some(pair) if pair.len() == 2 => format!("{} : {}", value_text(&pair[0]), value_text(&pair[1])),
        _ => value_text(element),
    }
}

fn value_text(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Object(object) => {
            if let Some(inner) = object.get("elem") {
                return value_text(inner.get("val").unwrap_or(inner));
            }
            if let Some(Json::Array(parts)) = object.get("concat") {
                return parts.iter().map(value_text).collect::<Vec<_>>().join(" . ");
            }
            for verdict in ["goto", "jump"] {
                if let Some(target) = object.get(verdict).and_then(|t| t.get("target")).and_then(Json::as_str)
                {
                    return format!("{verdict} {target}");
                }
            }
            for verdict in ["drop", "accept", "return"] {
                if object.contains_key(verdict) {
                    return verdict.into();
                }
            }
            value.to_string()
        }
        other => other.to_string(),
    }
}
