//! The kernel's reference rules, checked before anything reaches the kernel: every chain a
//! rule or verdict element names exists, every set a rule looks up exists and has the right
//! kind, and every element key has the arity of its set's key.

use super::ir::{ElementValue, Ruleset, SetData, Statement, Table};

/// A ruleset the kernel would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRuleset {
    /// A jump, goto or verdict element names a chain that does not exist.
    #[error("table {table}: {referrer} refers to chain {chain}, which does not exist")]
    MissingChain {
        /// The table.
        table: String,
        /// The chain or set holding the reference.
        referrer: String,
        /// The missing chain.
        chain: String,
    },
    /// A rule looks up a set or map that does not exist or is of the wrong kind.
    #[error("table {table}: chain {chain} uses @{set}, which {problem}")]
    BadSetReference {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// The set.
        set: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// An element's key has the wrong number of values.
    #[error("table {table}: set {set} has an element with {got} key values, its key has {want}")]
    KeyArity {
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// The element's arity.
        got: usize,
        /// The set's arity.
        want: usize,
    },
}

impl Ruleset {
    /// Checks every table's references and element shapes.
    pub fn validate(&self) -> Result<(), InvalidRuleset> {
        self.tables.iter().try_for_each(validate_table)
    }
}

fn validate_table(table: &Table) -> Result<(), InvalidRuleset> {
    let table_name = format!("{} {}", table.id.family.as_str(), table.id.name);
    let check_chain = |referrer: &str, chain: &str| {
        if table.chains.contains_key(chain) {
            Ok(())
        } else {
            Err(InvalidRuleset::MissingChain {
                table: table_name.clone(),
                referrer: referrer.into(),
                chain: chain.into(),
            })
        }
    };
    for chain in table.chains.values() {
        let name = &chain.decl.name;
        for statement in chain.rules.iter().flat_map(|r| &r.statements) {
            let (set, wants) = match statement {
                Statement::Verdict(verdict) => {
                    if let Some(target) = verdict.target() {
                        check_chain(&format!("chain {name}"), target)?;
                    }
                    continue;
                }
                Statement::NumgenVmap { chains } => {
                    for target in chains {
                        check_chain(&format!("chain {name}"), target)?;
                    }
                    continue;
                }
                Statement::UpdateSet { set, .. } => (set, SetKind::Set),
                Statement::InSet { set, .. } => (set, SetKind::Set),
                Statement::VerdictMap { map, .. } => (map, SetKind::VerdictMap),
                Statement::DnatMap { map, .. } => (map, SetKind::DataMap),
                _ => continue,
            };
            let bad = |problem| InvalidRuleset::BadSetReference {
                table: table_name.clone(),
                chain: name.clone(),
                set: set.clone(),
                problem,
            };
            let decl = &table.sets.get(set).ok_or_else(|| bad("does not exist"))?.decl;
            let kind = match decl.data {
                None => SetKind::Set,
                Some(SetData::Verdict) => SetKind::VerdictMap,
                Some(SetData::Typeof(_)) => SetKind::DataMap,
            };
            if kind != wants {
                return Err(bad("is not the kind of set this statement needs"));
            }
        }
    }
    for set in table.sets.values() {
        let want = set.decl.key.arity();
        for (key, element) in &set.elements {
            if key.len() != want {
                return Err(InvalidRuleset::KeyArity {
                    table: table_name,
                    set: set.decl.name.clone(),
                    got: key.len(),
                    want,
                });
            }
            if let Some(ElementValue::Verdict(verdict)) = &element.value
                && let Some(target) = verdict.target()
            {
                check_chain(&format!("map {}", set.decl.name), target)?;
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SetKind {
    Set,
    VerdictMap,
    DataMap,
}
