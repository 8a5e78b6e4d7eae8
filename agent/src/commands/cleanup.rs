//! `kproxy cleanup`: delete kproxy's tables, whether or not they exist, and nothing else;
//! with `--kube-proxy`, also the tables kube-proxy's nftables mode leaves behind.

use std::process::ExitCode;

use kproxy_rules::nft::{Family, TableRef, Transaction};

use crate::cli::CleanupArgs;
use crate::dataplane::nft::{NftCli, own_tables};

/// kube-proxy's nftables-mode table name, in both families.
const KUBE_PROXY_TABLE: &str = "kube-proxy";

/// Removes the tables in one transaction.
pub async fn cleanup(args: &CleanupArgs) -> ExitCode {
    let mut tables = own_tables().to_vec();
    if args.kube_proxy {
        tables.extend(
            [Family::Ip, Family::Ip6].map(|family| TableRef { family, name: KUBE_PROXY_TABLE.into() }),
        );
    }
    let names: Vec<String> = tables.iter().map(|t| format!("{} {}", t.family.as_str(), t.name)).collect();
    match NftCli::new(&args.nft.nft).apply(&Transaction::delete_tables(&tables)).await {
        Ok(()) => {
            tracing::info!("deleted tables {} (those that existed)", names.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("cleanup failed: {e}");
            ExitCode::FAILURE
        }
    }
}
