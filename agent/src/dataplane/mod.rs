//! The kernel side: everything that programs the kernel lives here, behind [`Dataplane`], so
//! that the sync loop can be tested against an in-memory kernel.

pub mod conntrack;
pub mod nft;

#[cfg(test)]
pub mod fake;

use kproxy_rules::nft::{Inventory, Transaction};

/// Applies nftables transactions atomically: all of a transaction or nothing.
pub trait Dataplane {
    /// Why a transaction was refused, or the kernel could not be read.
    type Error: std::fmt::Display;

    /// Applies `tx`; on error nothing of it took effect.
    async fn apply(&self, tx: &Transaction<'_>) -> Result<(), Self::Error>;

    /// What kproxy's own tables hold now, by name: the tables that exist, their chains and
    /// sets. Full syncs rewrite the tables in place from it.
    async fn inventory(&self) -> Result<Vec<Inventory>, Self::Error>;
}

impl Dataplane for nft::NftCli {
    type Error = nft::NftError;

    async fn apply(&self, tx: &Transaction<'_>) -> Result<(), nft::NftError> {
        nft::NftCli::apply(self, tx).await
    }

    async fn inventory(&self) -> Result<Vec<Inventory>, nft::NftError> {
        nft::NftCli::inventory(self).await
    }
}
