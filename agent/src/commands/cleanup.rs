//! `kproxy cleanup`: delete kproxy's tables, whether or not they exist, and nothing else.

use std::process::ExitCode;

use kproxy_rules::nft::Transaction;

use crate::cli::NftArgs;
use crate::dataplane::nft::{NftCli, own_tables};

/// Removes `ip kproxy` and `ip6 kproxy` in one transaction.
pub async fn cleanup(args: &NftArgs) -> ExitCode {
    let nft = NftCli::new(&args.nft);
    match nft.apply(&Transaction::delete_tables(&own_tables())).await {
        Ok(()) => {
            tracing::info!("deleted tables ip kproxy and ip6 kproxy");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("cleanup failed: {e}");
            ExitCode::FAILURE
        }
    }
}
