//! The differ: the smallest transactions that take the kernel from the ruleset it holds to the
//! desired one. Steady-state syncs cost what changed, not what exists.

use std::collections::BTreeSet;

use super::ir::{Chain, Ruleset, Table, TableRef, Value};
use super::transaction::{Operation, Transaction};

/// A change in two transactions, as [`diff`] and [`Transaction::rewrite`] produce it: the
/// change itself, and the removal of the objects it left unused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update<'a> {
    /// Everything but the removal of unused chains and sets, atomically.
    pub changes: Transaction<'a>,
    /// Deletes the chains and sets that `changes` emptied and unreferenced; apply it right
    /// after `changes`.
    ///
    /// Kernels before 6.2 refuse to delete a chain in the same transaction that deletes the
    /// last map element jumping to it (EBUSY), which is why kube-proxy deletes stale chains in
    /// a later transaction too. Until `cleanup` runs, the stale objects are empty and unused.
    pub cleanup: Transaction<'a>,
}

impl Update<'_> {
    /// Whether the rulesets were equal.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.cleanup.is_empty()
    }
}

/// The update from `from` to `to`, or `None` when only a full sync can get there: a table
/// appears or disappears, or a table or chain is declared differently (nft cannot change a
/// base chain's hook in place).
///
/// Within each table the order is one the kernel accepts: new chains and sets; element
/// deletions (changed elements are deleted and re-added, since nft cannot replace a value in
/// place); flushes of changed and stale chains; sets declared otherwise deleted and declared
/// again; the new rules; element additions.
pub fn diff<'a>(from: &'a Ruleset, to: &'a Ruleset) -> Option<Update<'a>> {
    if from.tables.len() != to.tables.len() {
        return None;
    }
    let mut update = Update::default();
    for (old, new) in from.tables.iter().zip(&to.tables) {
        if old.id != new.id || old.comment != new.comment {
            return None;
        }
        diff_table(old, new, &mut update)?;
    }
    Some(update)
}

fn diff_table<'a>(old: &'a Table, new: &'a Table, update: &mut Update<'a>) -> Option<()> {
    let id = &new.id;
    let tx = &mut update.changes;
    for chain in new.chains.values() {
        match old.chains.get(&chain.decl.name) {
            None => tx.push(Operation::AddChain { table: id.clone(), decl: chain.decl.clone() }),
            Some(existing) if existing.decl != chain.decl => return None,
            Some(_) => {}
        }
    }
    // A set declared otherwise (a new affinity timeout) is deleted and declared again, after
    // the chains that use it are flushed; its elements start afresh.
    let mut redeclared = BTreeSet::new();
    for set in new.sets.values() {
        match old.sets.get(&set.decl.name) {
            None => tx.push(Operation::AddSet { table: id.clone(), decl: set.decl.clone() }),
            Some(existing) if existing.decl != set.decl => {
                redeclared.insert(set.decl.name.as_str());
            }
            Some(_) => {}
        }
    }

    for set in old.sets.values().filter(|s| !redeclared.contains(s.decl.name.as_str())) {
        let Some(desired) = new.sets.get(&set.decl.name) else { continue };
        let keys: Vec<&[Value]> = set
            .elements
            .iter()
            .filter(|(key, element)| desired.elements.get(*key) != Some(*element))
            .map(|(key, _)| key.as_slice())
            .collect();
        if !keys.is_empty() {
            tx.push(Operation::DeleteElements { table: id.clone(), set: set.decl.name.clone(), keys });
        }
    }

    let rewritten = |chain: &Chain| {
        new.chains.get(&chain.decl.name).is_none_or(|c| c.rules != chain.rules)
            || chain.rules.iter().any(|rule| rule.sets().any(|set| redeclared.contains(set)))
    };
    let rewritten: BTreeSet<&str> =
        old.chains.values().filter(|c| rewritten(c)).map(|c| c.decl.name.as_str()).collect();
    for chain in old.chains.values().filter(|c| rewritten.contains(c.decl.name.as_str())) {
        if !chain.rules.is_empty() {
            tx.push(Operation::FlushChain { table: id.clone(), chain: chain.decl.name.clone() });
        }
    }
    for name in &redeclared {
        let old_set = &old.sets[*name];
        tx.push(Operation::DeleteSet { table: id.clone(), set: name.to_string(), kind: old_set.decl.kind() });
        tx.push(Operation::AddSet { table: id.clone(), decl: new.sets[*name].decl.clone() });
    }
    for chain in new.chains.values() {
        if old.chains.contains_key(&chain.decl.name) && !rewritten.contains(chain.decl.name.as_str()) {
            continue;
        }
        for rule in &chain.rules {
            tx.push(Operation::AddRule { table: id.clone(), chain: chain.decl.name.clone(), rule });
        }
    }

    for set in new.sets.values() {
        let existing = old.sets.get(&set.decl.name).filter(|_| !redeclared.contains(set.decl.name.as_str()));
        let elements = set
            .elements
            .iter()
            .filter(|(key, element)| existing.is_none_or(|e| e.elements.get(*key) != Some(*element)))
            .map(|(key, element)| (key.as_slice(), element));
        tx.add_elements(id, &set.decl.name, elements);
    }

    for chain in old.chains.values().filter(|c| !new.chains.contains_key(&c.decl.name)) {
        update.cleanup.push(Operation::DeleteChain { table: id.clone(), chain: chain.decl.name.clone() });
    }
    for set in old.sets.values().filter(|s| !new.sets.contains_key(&s.decl.name)) {
        update.cleanup.push(Operation::DeleteSet {
            table: TableRef::clone(id),
            set: set.decl.name.clone(),
            kind: set.decl.kind(),
        });
    }
    Some(())
}
