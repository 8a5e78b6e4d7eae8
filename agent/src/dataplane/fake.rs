//! An in-memory kernel for tests: applies transactions with the kernel's rules
//! ([`Ruleset::apply`]), keeps every transaction it was given, and fails on request.

use std::sync::{Arc, Mutex};

use kproxy_rules::nft::{Inventory, Ruleset, Transaction};

use super::Dataplane;

/// The fake kernel.
#[derive(Default)]
pub struct FakeDataplane {
    /// What the kernel holds.
    pub ruleset: Mutex<Ruleset>,
    /// Every transaction applied successfully, in order.
    pub applied: Mutex<Vec<Transaction>>,
    /// Fail this many of the next transactions.
    pub fail_next: Mutex<usize>,
}

impl Dataplane for Arc<FakeDataplane> {
    type Error = String;

    async fn apply(&self, tx: &Transaction) -> Result<(), String> {
        let mut fail = self.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err("injected failure".into());
        }
        let mut ruleset = self.ruleset.lock().unwrap();
        *ruleset = ruleset.apply(tx).map_err(|e| e.to_string())?;
        self.applied.lock().unwrap().push(tx.clone());
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<Inventory>, String> {
        Ok(self.ruleset.lock().unwrap().tables.iter().map(Inventory::of).collect())
    }
}
