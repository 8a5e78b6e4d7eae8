//! An in-memory kernel: applies a transaction to a ruleset with the kernel's existence and
//! reference rules, all or nothing. Tests use it to prove that the differ's transactions take
//! one ruleset exactly to another; the agent's fake dataplane uses it to stand in for nft.

use super::ir::{Chain, ElementValue, Rule, Ruleset, Set, Statement, Table, TableRef};
use super::transaction::{Operation, Transaction};
use super::validate::InvalidRuleset;

/// Why the kernel would refuse a transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The operation needs an object that does not exist (ENOENT).
    #[error("operation {index}: {object} does not exist")]
    NotFound {
        /// The operation's position in the transaction.
        index: usize,
        /// The missing object.
        object: String,
    },
    /// The object exists with another declaration, or an element with another value (EEXIST).
    #[error("operation {index}: {object} exists and differs")]
    Exists {
        /// The operation's position.
        index: usize,
        /// The object.
        object: String,
    },
    /// The chain or set is still in use (EBUSY).
    #[error("operation {index}: {object} is in use")]
    Busy {
        /// The operation's position.
        index: usize,
        /// The object.
        object: String,
    },
    /// The result would have dangling references.
    #[error(transparent)]
    Invalid(#[from] InvalidRuleset),
}

impl Ruleset {
    /// The ruleset after `tx`, or why the kernel would refuse `tx` (then nothing changes).
    pub fn apply(&self, tx: &Transaction) -> Result<Ruleset, ApplyError> {
        let mut next = self.clone();
        for (index, op) in tx.operations().iter().enumerate() {
            next.apply_operation(index, op)?;
        }
        next.validate()?;
        Ok(next)
    }

    fn table_mut(&mut self, index: usize, id: &TableRef) -> Result<&mut Table, ApplyError> {
        self.tables.iter_mut().find(|t| &t.id == id).ok_or_else(|| ApplyError::NotFound {
            index,
            object: format!("table {} {}", id.family.as_str(), id.name),
        })
    }

    fn apply_operation(&mut self, index: usize, op: &Operation) -> Result<(), ApplyError> {
        let not_found = |object: String| ApplyError::NotFound { index, object };
        match op {
            Operation::AddTable { table, comment } => {
                if !self.tables.iter().any(|t| &t.id == table) {
                    self.tables.push(Table::new(table.family, &table.name, comment.clone()));
                }
            }
            Operation::DeleteTable(table) => {
                let before = self.tables.len();
                self.tables.retain(|t| &t.id != table);
                if self.tables.len() == before {
                    return Err(not_found(format!("table {} {}", table.family.as_str(), table.name)));
                }
            }
            Operation::AddChain { table, decl } => {
                let table = self.table_mut(index, table)?;
                match table.chains.get(&decl.name) {
                    Some(existing) if &existing.decl != decl => {
                        return Err(ApplyError::Exists { index, object: format!("chain {}", decl.name) });
                    }
                    Some(_) => {}
                    None => table.add_chain(decl.clone(), Vec::new()),
                }
            }
            Operation::AddSet { table, decl } => {
                let table = self.table_mut(index, table)?;
                match table.sets.get(&decl.name) {
                    Some(existing) if &existing.decl != decl => {
                        return Err(ApplyError::Exists { index, object: format!("set {}", decl.name) });
                    }
                    Some(_) => {}
                    None => table.add_set(decl.clone()),
                }
            }
            Operation::AddRule { table, chain, rule } => {
                let table = self.table_mut(index, table)?;
                let chain = table.chains.get_mut(chain).ok_or_else(|| not_found(format!("chain {chain}")))?;
                chain.rules.push(Rule::clone(rule));
            }
            Operation::FlushChain { table, chain } => {
                let table = self.table_mut(index, table)?;
                let chain = table.chains.get_mut(chain).ok_or_else(|| not_found(format!("chain {chain}")))?;
                chain.rules.clear();
            }
            Operation::FlushTable(table) => {
                let table = self.table_mut(index, table)?;
                table.chains.values_mut().for_each(|chain| chain.rules.clear());
            }
            Operation::FlushSet { table, set, kind } => {
                let table = self.table_mut(index, table)?;
                let target = table
                    .sets
                    .get_mut(set)
                    .filter(|s| s.decl.kind() == *kind)
                    .ok_or_else(|| not_found(format!("{} {set}", kind.keyword())))?;
                target.elements.clear();
            }
            Operation::DeleteChain { table, chain } => {
                let table = self.table_mut(index, table)?;
                let busy = ApplyError::Busy { index, object: format!("chain {chain}") };
                let existing = table.chains.get(chain).ok_or_else(|| not_found(format!("chain {chain}")))?;
                if !existing.rules.is_empty() || chain_is_referenced(table, chain) {
                    return Err(busy);
                }
                table.chains.remove(chain);
            }
            Operation::DeleteSet { table, set, kind } => {
                let table = self.table_mut(index, table)?;
                if table.sets.get(set).is_none_or(|s| s.decl.kind() != *kind) {
                    return Err(not_found(format!("{} {set}", kind.keyword())));
                }
                if set_is_referenced(table, set) {
                    return Err(ApplyError::Busy { index, object: format!("set {set}") });
                }
                table.sets.remove(set);
            }
            Operation::AddElements { table, set, elements } => {
                let table = self.table_mut(index, table)?;
                let target = table.sets.get_mut(set).ok_or_else(|| not_found(format!("set {set}")))?;
                for &(key, element) in elements {
                    match target.elements.get(key) {
                        Some(existing) if existing.value != element.value => {
                            return Err(ApplyError::Exists {
                                index,
                                object: format!("element {key:?} of {set}"),
                            });
                        }
                        Some(_) => {}
                        None => {
                            target.elements.insert(key.to_vec(), element.clone());
                        }
                    }
                }
            }
            Operation::DeleteElements { table, set, keys } => {
                let table = self.table_mut(index, table)?;
                let target: &mut Set =
                    table.sets.get_mut(set).ok_or_else(|| not_found(format!("set {set}")))?;
                for &key in keys {
                    if target.elements.remove(key).is_none() {
                        return Err(not_found(format!("element {key:?} of {set}")));
                    }
                }
            }
        }
        Ok(())
    }
}

fn chain_is_referenced(table: &Table, chain: &str) -> bool {
    let in_rules = table
        .chains
        .values()
        .flat_map(|c: &Chain| &c.rules)
        .flat_map(|r| &r.statements)
        .any(|s| matches!(s, Statement::Verdict(v) if v.target() == Some(chain)));
    let in_elements = table
        .sets
        .values()
        .flat_map(|s| s.elements.values())
        .any(|e| matches!(&e.value, Some(ElementValue::Verdict(v)) if v.target() == Some(chain)));
    in_rules || in_elements
}

fn set_is_referenced(table: &Table, set: &str) -> bool {
    table.chains.values().flat_map(|c| &c.rules).flat_map(Rule::sets).any(|name| name == set)
}
