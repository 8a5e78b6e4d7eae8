//! An in-memory kernel for tests: applies transactions with the kernel's rules
//! ([`Ruleset::apply`]), keeps the text of every transaction it was given, and fails on request.

use std::sync::{Arc, Mutex};

use kproxy_rules::nft::{Inventory, Ruleset, Transaction};

use super::Dataplane;

/// A transaction the fake kernel applied.
pub struct Applied {
    /// Its nft text.
    pub text: String,
    /// How many elements it added or deleted.
    pub elements: usize,
}

/// The fake kernel.
#[derive(Default)]
pub struct FakeDataplane {
    /// What the kernel holds.
    pub ruleset: Mutex<Ruleset>,
    /// Every transaction applied successfully, in order.
    pub applied: Mutex<Vec<Applied>>,
    /// Fail this many of the next transactions.
    pub fail_next: Mutex<usize>,
}

impl Dataplane for Arc<FakeDataplane> {
    type Error = String;

    async fn apply(&self, tx: &Transaction<'_>) -> Result<(), String> {
        let mut fail = self.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err("injected failure".into());
        }
        let mut ruleset = self.ruleset.lock().unwrap();
        *ruleset = ruleset.apply(tx).map_err(|e| e.to_string())?;
        self.applied.lock().unwrap().push(Applied { text: tx.to_string(), elements: tx.element_count() });
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<Inventory>, String> {
        Ok(self.ruleset.lock().unwrap().tables.iter().map(Inventory::of).collect())
    }
}
