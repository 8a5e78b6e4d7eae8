//! A transaction: an ordered list of operations that the kernel applies atomically, and its
//! nft text form, which is what the agent feeds to `nft -f -`.

use std::fmt::{self, Write};

use super::ir::{ChainDecl, Element, Rule, Ruleset, SetDecl, Table, TableRef, Value};
use super::syntax::{
    set_keyword, write_base_chain, write_comment, write_element, write_rule, write_set_decl_body,
    write_values,
};

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `add table`: create the table if it is absent.
    AddTable {
        /// The table.
        table: TableRef,
        /// Its comment.
        comment: Option<String>,
    },
    /// `delete table`: remove the table and everything in it; it must exist.
    DeleteTable(TableRef),
    /// `add chain`.
    AddChain {
        /// The table.
        table: TableRef,
        /// The chain's declaration.
        decl: ChainDecl,
    },
    /// `add set` / `add map`.
    AddSet {
        /// The table.
        table: TableRef,
        /// The set's declaration.
        decl: SetDecl,
    },
    /// `add rule`: append a rule to a chain.
    AddRule {
        /// The table.
        table: TableRef,
        /// The chain's name.
        chain: String,
        /// The rule.
        rule: Rule,
    },
    /// `add element`: add elements to a set or map.
    AddElements {
        /// The table.
        table: TableRef,
        /// The set's name.
        set: String,
        /// The elements, by key.
        elements: Vec<(Vec<Value>, Element)>,
    },
    /// `delete element`: remove elements, by key; each must exist.
    DeleteElements {
        /// The table.
        table: TableRef,
        /// The set's name.
        set: String,
        /// The keys.
        keys: Vec<Vec<Value>>,
    },
    /// `flush chain`: remove every rule of a chain.
    FlushChain {
        /// The table.
        table: TableRef,
        /// The chain's name.
        chain: String,
    },
    /// `flush set` / `flush map`: remove every element.
    FlushSet {
        /// The table.
        table: TableRef,
        /// The set's declaration.
        decl: SetDecl,
    },
    /// `delete chain`: the chain must exist, be empty and be referenced by nothing.
    DeleteChain {
        /// The table.
        table: TableRef,
        /// The chain's name.
        chain: String,
    },
    /// `delete set` / `delete map`: the set must exist and no rule may use it.
    DeleteSet {
        /// The table.
        table: TableRef,
        /// The set's declaration (its keyword, `set` or `map`, depends on it).
        decl: SetDecl,
    },
}

/// Operations the kernel applies all together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    operations: Vec<Operation>,
}

/// The most elements one `add element` command carries. Fewer, longer commands load faster:
/// at 10k Services x 10 endpoints one command per 4096 elements cut `nft -f` from 4.1 s to 3.3 s
/// against one command per Service port (hack/bench, docs/performance.md).
const ELEMENTS_PER_COMMAND: usize = 4096;

impl Transaction {
    /// A transaction that replaces each table of `ruleset` with its desired contents.
    ///
    /// nft 1.0.6 has no `destroy`, so each table is first added (a no-op when it exists), then
    /// deleted, then created afresh, all in one transaction: traffic sees either the old table
    /// or the new one, never an empty one.
    pub fn replace(ruleset: &Ruleset) -> Transaction {
        let mut tx = Transaction::default();
        for table in &ruleset.tables {
            tx.operations.push(Operation::AddTable { table: table.id.clone(), comment: None });
            tx.operations.push(Operation::DeleteTable(table.id.clone()));
            tx.create(table);
        }
        tx
    }

    /// A transaction that removes these tables if they exist, and touches nothing else.
    pub fn delete_tables(tables: &[TableRef]) -> Transaction {
        let mut tx = Transaction::default();
        for table in tables {
            tx.operations.push(Operation::AddTable { table: table.clone(), comment: None });
            tx.operations.push(Operation::DeleteTable(table.clone()));
        }
        tx
    }

    /// A transaction that rewrites every desired chain and set in place, without deleting the
    /// tables: the periodic full sync. It repairs drift (a table, chain, rule or element
    /// deleted or changed by hand) while dynamic sets (session affinity) keep their entries.
    /// Chains and sets of `previous` that are no longer desired are ensured and emptied, so
    /// that the differ's cleanup transaction can delete them.
    pub fn refresh(ruleset: &Ruleset, previous: &Ruleset) -> Transaction {
        let mut tx = Transaction::default();
        for table in &ruleset.tables {
            let id = &table.id;
            tx.operations.push(Operation::AddTable { table: id.clone(), comment: table.comment.clone() });
            if let Some(old) = previous.tables.iter().find(|t| &t.id == id) {
                for chain in old.chains.values().filter(|c| !table.chains.contains_key(&c.decl.name)) {
                    tx.operations.push(Operation::AddChain { table: id.clone(), decl: chain.decl.clone() });
                    tx.operations
                        .push(Operation::FlushChain { table: id.clone(), chain: chain.decl.name.clone() });
                }
                for set in old.sets.values().filter(|s| !table.sets.contains_key(&s.decl.name)) {
                    tx.operations.push(Operation::AddSet { table: id.clone(), decl: set.decl.clone() });
                }
            }
            for chain in table.chains.values() {
                tx.operations.push(Operation::AddChain { table: id.clone(), decl: chain.decl.clone() });
            }
            for set in table.sets.values() {
                tx.operations.push(Operation::AddSet { table: id.clone(), decl: set.decl.clone() });
            }
            for chain in table.chains.values() {
                tx.operations
                    .push(Operation::FlushChain { table: id.clone(), chain: chain.decl.name.clone() });
            }
            for set in table.sets.values().filter(|s| s.decl.timeout.is_none()) {
                tx.operations.push(Operation::FlushSet { table: id.clone(), decl: set.decl.clone() });
            }
            tx.add_contents(table);
        }
        tx
    }

    /// Appends the operations that create `table` from nothing: declarations first, so that
    /// every rule and element finds the chains and sets it refers to.
    fn create(&mut self, table: &Table) {
        let id = &table.id;
        self.operations.push(Operation::AddTable { table: id.clone(), comment: table.comment.clone() });
        for chain in table.chains.values() {
            self.operations.push(Operation::AddChain { table: id.clone(), decl: chain.decl.clone() });
        }
        for set in table.sets.values() {
            self.operations.push(Operation::AddSet { table: id.clone(), decl: set.decl.clone() });
        }
        self.add_contents(table);
    }

    /// Appends every rule and every element of `table`, whose chains and sets exist.
    fn add_contents(&mut self, table: &Table) {
        let id = &table.id;
        for chain in table.chains.values() {
            for rule in &chain.rules {
                self.operations.push(Operation::AddRule {
                    table: id.clone(),
                    chain: chain.decl.name.clone(),
                    rule: rule.clone(),
                });
            }
        }
        for set in table.sets.values() {
            let elements: Vec<(Vec<Value>, Element)> =
                set.elements.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
            for chunk in Transaction::element_commands(&elements) {
                self.operations.push(Operation::AddElements {
                    table: id.clone(),
                    set: set.decl.name.clone(),
                    elements: chunk.to_vec(),
                });
            }
        }
    }

    /// Splits elements into the runs one `add element` command carries: at most
    /// [`ELEMENTS_PER_COMMAND`].
    pub(super) fn element_commands(
        elements: &[(Vec<Value>, Element)],
    ) -> impl Iterator<Item = &[(Vec<Value>, Element)]> {
        elements.chunks(ELEMENTS_PER_COMMAND)
    }

    /// Appends an operation.
    pub fn push(&mut self, operation: Operation) {
        self.operations.push(operation);
    }

    /// The operations, in order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// How many elements the transaction adds or deletes, for logs and metrics.
    pub fn element_count(&self) -> usize {
        self.operations
            .iter()
            .map(|op| match op {
                Operation::AddElements { elements, .. } => elements.len(),
                Operation::DeleteElements { keys, .. } => keys.len(),
                _ => 0,
            })
            .sum()
    }
}

/// The nft script: one command per line, as `nft -f -` reads it.
impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.operations {
            write_operation(f, op)?;
            f.write_char('\n')?;
        }
        Ok(())
    }
}

fn write_operation(f: &mut impl Write, op: &Operation) -> fmt::Result {
    match op {
        Operation::AddTable { table, comment } => {
            write!(f, "add table {} {}", table.family.as_str(), table.name)?;
            if let Some(comment) = comment {
                f.write_str(" { ")?;
                write_comment(f, comment)?;
                f.write_str("; }")?;
            }
            Ok(())
        }
        Operation::DeleteTable(table) => write!(f, "delete table {} {}", table.family.as_str(), table.name),
        Operation::AddChain { table, decl } => {
            write!(f, "add chain {} {} {}", table.family.as_str(), table.name, decl.name)?;
            if decl.base.is_some() || decl.comment.is_some() {
                f.write_str(" {")?;
                if let Some(base) = &decl.base {
                    f.write_char(' ')?;
                    write_base_chain(f, base)?;
                }
                if let Some(comment) = &decl.comment {
                    f.write_char(' ')?;
                    write_comment(f, comment)?;
                    f.write_char(';')?;
                }
                f.write_str(" }")?;
            }
            Ok(())
        }
        Operation::AddSet { table, decl } => {
            write!(
                f,
                "add {} {} {} {} {{ ",
                set_keyword(decl),
                table.family.as_str(),
                table.name,
                decl.name
            )?;
            write_set_decl_body(f, table.family, decl)?;
            f.write_str(" }")
        }
        Operation::AddRule { table, chain, rule } => {
            write!(f, "add rule {} {} {chain} ", table.family.as_str(), table.name)?;
            write_rule(f, table.family, rule)
        }
        Operation::AddElements { table, set, elements } => {
            write!(f, "add element {} {} {set} {{ ", table.family.as_str(), table.name)?;
            for (i, (key, element)) in elements.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_element(f, key, element)?;
            }
            f.write_str(" }")
        }
        Operation::DeleteElements { table, set, keys } => {
            write!(f, "delete element {} {} {set} {{ ", table.family.as_str(), table.name)?;
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_values(f, key)?;
            }
            f.write_str(" }")
        }
        Operation::FlushChain { table, chain } => {
            write!(f, "flush chain {} {} {chain}", table.family.as_str(), table.name)
        }
        Operation::FlushSet { table, decl } => {
            write!(f, "flush {} {} {} {}", set_keyword(decl), table.family.as_str(), table.name, decl.name)
        }
        Operation::DeleteChain { table, chain } => {
            write!(f, "delete chain {} {} {chain}", table.family.as_str(), table.name)
        }
        Operation::DeleteSet { table, decl } => {
            write!(f, "delete {} {} {} {}", set_keyword(decl), table.family.as_str(), table.name, decl.name)
        }
    }
}
