//! The kernel side: everything that programs the kernel lives here, behind [`Dataplane`], so
//! that the sync loop can be tested against an in-memory kernel.

pub mod conntrack;
pub mod nft;

#[cfg(test)]
pub mod fake;

use kproxy_rules::nft::Transaction;

/// Applies nftables transactions atomically: all of a transaction or nothing.
pub trait Dataplane {
    /// Why a transaction was refused.
    type Error: std::fmt::Display;

    /// Applies `tx`; on error nothing of it took effect.
    async fn apply(&self, tx: &Transaction) -> Result<(), Self::Error>;
}

impl Dataplane for nft::NftCli {
    type Error = nft::NftError;

    async fn apply(&self, tx: &Transaction) -> Result<(), nft::NftError> {
        nft::NftCli::apply(self, tx).await
    }
}
