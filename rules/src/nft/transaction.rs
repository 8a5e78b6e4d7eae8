//! A transaction: an ordered list of operations that the kernel applies atomically, and its
//! nft text form, which is what the agent feeds to `nft -f -`.

use std::fmt::{self, Write};

use super::diff::Update;
use super::inventory::{ExistingSet, Inventory};
use super::ir::{ChainDecl, Element, Rule, Ruleset, SetDecl, SetKind, Table, TableRef, Value};
use super::syntax::{
    write_base_chain, write_comment, write_element, write_rule, write_set_decl_body, write_values,
};

/// One operation of a transaction. Rules and elements are borrowed from the rulesets the
/// transaction was built from: at 10k Services a full sync carries 220k elements, which a copy
/// would double in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
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
        rule: &'a Rule,
    },
    /// `add element`: add elements to a set or map.
    AddElements {
        /// The table.
        table: TableRef,
        /// The set's name.
        set: String,
        /// The elements, by key.
        elements: Vec<(&'a [Value], &'a Element)>,
    },
    /// `delete element`: remove elements, by key; each must exist.
    DeleteElements {
        /// The table.
        table: TableRef,
        /// The set's name.
        set: String,
        /// The keys.
        keys: Vec<&'a [Value]>,
    },
    /// `flush chain`: remove every rule of a chain.
    FlushChain {
        /// The table.
        table: TableRef,
        /// The chain's name.
        chain: String,
    },
    /// `flush table`: remove every rule of every chain; sets keep their elements.
    FlushTable(TableRef),
    /// `flush set` / `flush map`: remove every element.
    FlushSet {
        /// The table.
        table: TableRef,
        /// The set's name.
        set: String,
        /// Set or map.
        kind: SetKind,
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
        /// The set's name.
        set: String,
        /// Set or map.
        kind: SetKind,
    },
}

/// Operations the kernel applies all together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction<'a> {
    operations: Vec<Operation<'a>>,
}

/// The most elements one `add element` command carries. Fewer, longer commands load faster:
/// at 10k Services x 10 endpoints one command per 4096 elements cut `nft -f` from 4.1 s to 3.3 s
/// against one command per Service port (hack/bench, docs/performance.md).
const ELEMENTS_PER_COMMAND: usize = 4096;

impl<'a> Transaction<'a> {
    /// A transaction that replaces each table of `ruleset` with its desired contents.
    ///
    /// nft 1.0.6 has no `destroy`, so each table is first added (a no-op when it exists), then
    /// deleted, then created afresh, all in one transaction: traffic sees either the old table
    /// or the new one, never an empty one.
    pub fn replace(ruleset: &'a Ruleset) -> Transaction<'a> {
        let mut tx = Transaction::default();
        for table in &ruleset.tables {
            tx.operations.push(Operation::AddTable { table: table.id.clone(), comment: None });
            tx.operations.push(Operation::DeleteTable(table.id.clone()));
            tx.create(table);
        }
        tx
    }

    /// A transaction that removes these tables if they exist, and touches nothing else.
    pub fn delete_tables(tables: &[TableRef]) -> Transaction<'a> {
        let mut tx = Transaction::default();
        for table in tables {
            tx.operations.push(Operation::AddTable { table: table.clone(), comment: None });
            tx.operations.push(Operation::DeleteTable(table.clone()));
        }
        tx
    }

    /// The update that rewrites kproxy's tables in place into `ruleset`, given what the kernel
    /// holds (`existing`): the periodic full sync, and the first sync of an agent that finds
    /// its tables from an earlier run.
    ///
    /// Unlike [`Transaction::replace`], the tables and their base chains stay the same kernel
    /// objects. A packet walks a base chain in one generation of the ruleset, old or new; when
    /// a table is deleted and created again in one transaction, its NAT chain exists twice
    /// during the commit, and a connection's first packet can pass the new chain before the
    /// commit and the old one after it, and be translated by neither. Every chain is flushed
    /// and refilled and every set emptied and refilled, which repairs any drift, except the
    /// sets the datapath fills (session affinity), which keep their entries. Chains and sets
    /// the ruleset no longer has are emptied here and deleted by [`Update::cleanup`]. The
    /// kernel refuses the transaction when a table holds a chain or set of the same name
    /// declared otherwise (an older kproxy's); [`Transaction::replace`] is the way out then.
    pub fn rewrite(ruleset: &'a Ruleset, existing: &[Inventory]) -> Update<'a> {
        let mut update = Update::default();
        let tx = &mut update.changes;
        for gone in existing.iter().filter(|e| !ruleset.tables.iter().any(|t| t.id == e.table)) {
            tx.operations.push(Operation::DeleteTable(gone.table.clone()));
        }
        for table in &ruleset.tables {
            let id = &table.id;
            tx.operations.push(Operation::AddTable { table: id.clone(), comment: table.comment.clone() });
            let inventory = existing.iter().find(|e| &e.table == id);
            if inventory.is_some() {
                tx.operations.push(Operation::FlushTable(id.clone()));
            }
            // A dynamic set with another timeout (the Service changed `timeoutSeconds`) is
            // declared again; with the rules flushed, nothing uses it. Kernel 6.18 would also
            // take the new timeout from `add set` alone; deleting and declaring again does not
            // depend on that.
            let redeclared = |name: &String, set: &ExistingSet| {
                table.sets.get(name).is_some_and(|desired| set.dynamic && desired.decl.timeout != set.timeout)
            };
            for (name, set) in inventory.iter().flat_map(|e| &e.sets).filter(|(n, s)| redeclared(n, s)) {
                tx.operations.push(Operation::DeleteSet {
                    table: id.clone(),
                    set: name.clone(),
                    kind: set.kind,
                });
            }
            tx.declare(table);
            for (name, set) in inventory.iter().flat_map(|e| &e.sets) {
                if !(set.dynamic && table.sets.contains_key(name)) {
                    tx.operations.push(Operation::FlushSet {
                        table: id.clone(),
                        set: name.clone(),
                        kind: set.kind,
                    });
                }
            }
            tx.add_contents(table);
            for chain in inventory.iter().flat_map(|e| &e.chains).filter(|c| !table.chains.contains_key(*c)) {
                update.cleanup.push(Operation::DeleteChain { table: id.clone(), chain: chain.clone() });
            }
            for (name, set) in
                inventory.iter().flat_map(|e| &e.sets).filter(|(s, _)| !table.sets.contains_key(*s))
            {
                update.cleanup.push(Operation::DeleteSet {
                    table: id.clone(),
                    set: name.clone(),
                    kind: set.kind,
                });
            }
        }
        update
    }

    /// Appends the operations that create `table` from nothing: declarations first, so that
    /// every rule and element finds the chains and sets it refers to.
    fn create(&mut self, table: &'a Table) {
        self.operations.push(Operation::AddTable { table: table.id.clone(), comment: table.comment.clone() });
        self.declare(table);
        self.add_contents(table);
    }

    /// Appends the declarations of every chain and set of `table`: they are created when
    /// absent, and left as they are when they exist as declared.
    fn declare(&mut self, table: &Table) {
        let id = &table.id;
        for chain in table.chains.values() {
            self.operations.push(Operation::AddChain { table: id.clone(), decl: chain.decl.clone() });
        }
        for set in table.sets.values() {
            self.operations.push(Operation::AddSet { table: id.clone(), decl: set.decl.clone() });
        }
    }

    /// Appends every rule and every element of `table`, whose chains and sets exist.
    fn add_contents(&mut self, table: &'a Table) {
        let id = &table.id;
        for chain in table.chains.values() {
            for rule in &chain.rules {
                self.operations.push(Operation::AddRule {
                    table: id.clone(),
                    chain: chain.decl.name.clone(),
                    rule,
                });
            }
        }
        for set in table.sets.values() {
            let elements = set.elements.iter().map(|(key, element)| (key.as_slice(), element));
            self.add_elements(id, &set.decl.name, elements);
        }
    }

    /// Appends `add element` commands for `elements` of `set`, at most
    /// [`ELEMENTS_PER_COMMAND`] each.
    pub(super) fn add_elements(
        &mut self,
        table: &TableRef,
        set: &str,
        elements: impl IntoIterator<Item = (&'a [Value], &'a Element)>,
    ) {
        let mut elements = elements.into_iter().peekable();
        while elements.peek().is_some() {
            let chunk: Vec<_> = elements.by_ref().take(ELEMENTS_PER_COMMAND).collect();
            self.operations.push(Operation::AddElements {
                table: table.clone(),
                set: set.into(),
                elements: chunk,
            });
        }
    }

    /// Appends an operation.
    pub fn push(&mut self, operation: Operation<'a>) {
        self.operations.push(operation);
    }

    /// The operations, in order.
    pub fn operations(&self) -> &[Operation<'a>] {
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
impl fmt::Display for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.operations {
            writeln!(f, "{op}")?;
        }
        Ok(())
    }
}

/// One nft command, without its newline.
impl fmt::Display for Operation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_operation(f, self)
    }
}

fn write_operation(f: &mut impl Write, op: &Operation<'_>) -> fmt::Result {
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
                decl.kind().keyword(),
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
        Operation::FlushTable(table) => write!(f, "flush table {} {}", table.family.as_str(), table.name),
        Operation::FlushSet { table, set, kind } => {
            write!(f, "flush {} {} {} {set}", kind.keyword(), table.family.as_str(), table.name)
        }
        Operation::DeleteChain { table, chain } => {
            write!(f, "delete chain {} {} {chain}", table.family.as_str(), table.name)
        }
        Operation::DeleteSet { table, set, kind } => {
            write!(f, "delete {} {} {} {set}", kind.keyword(), table.family.as_str(), table.name)
        }
    }
}
