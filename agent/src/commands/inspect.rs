//! `kproxy debug diff` and `kproxy debug status`: the desired tables against the kernel's, and
//! the running agent's state, for an operator at the node.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use kproxy_rules::nft::{Drift, TableSummary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::InspectArgs;
use crate::dataplane::nft::{NftCli, own_tables};
use crate::node::NodeSettings;
use crate::plan::{Plan, plan};

/// What `diff` and `status` both need: the plan and the drift.
struct Inspection {
    plan: Plan,
    drift: Vec<Drift>,
}

async fn inspect(args: &InspectArgs) -> Result<Inspection, String> {
    let config = args.settings.resolve().map_err(|e| e.to_string())?;
    let snapshot = super::explain::snapshot(&args.source, &config).await?;
    let settings = NodeSettings::new(super::node_name(config.hostname_override.as_deref()), &config);
    let plan = plan(&snapshot, &settings.context(settings.find(&snapshot.nodes)));
    let nft = NftCli::new(&args.nft.nft);
    let mut drift = Vec::new();
    for (table, id) in plan.ruleset.tables.iter().zip(own_tables()) {
        let listed = nft.list_table(&id).await.map_err(|e| e.to_string())?;
        let actual = listed.and_then(|json| {
            TableSummary::from_nft_json(&format!("{} {}", id.family.as_str(), id.name), &json)
        });
        drift.extend(TableSummary::of(table).drift(actual.as_ref()));
    }
    Ok(Inspection { plan, drift })
}

/// Prints the drift (`-` desired but missing, `+` present but not desired, `~` changed);
/// exits 1 when there is any, 0 when the kernel holds exactly the plan.
pub async fn diff(args: &InspectArgs) -> ExitCode {
    match inspect(args).await {
        Ok(inspection) if inspection.drift.is_empty() => {
            println!("no drift: the kernel holds the desired tables");
            ExitCode::SUCCESS
        }
        Ok(inspection) => {
            for drift in &inspection.drift {
                println!("{drift}");
            }
            println!("{} differences", inspection.drift.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Prints Services, endpoints, the agent's last sync and health, and drift.
pub async fn status(args: &InspectArgs) -> ExitCode {
    let inspection = match inspect(args).await {
        Ok(inspection) => inspection,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let plan = &inspection.plan;
    let services: std::collections::BTreeSet<String> =
        plan.ports.iter().map(|p| p.port.name.service.to_string()).collect();
    println!(
        "services:       {} ({} ports, {} endpoints)",
        services.len(),
        plan.ports.len(),
        plan.endpoint_count()
    );
    println!("skipped:        {} objects", plan.errors.len());
    for error in &plan.errors {
        println!("  {error}");
    }
    let config = args.settings.resolve().ok();
    let health = config.as_ref().and_then(|c| c.healthz_bind_address).map(loopback);
    match health {
        Some(address) => match http_get(address, "/healthz").await {
            Ok(body) => println!("agent:          {body}"),
            Err(e) => println!("agent:          not answering on {address} ({e})"),
        },
        None => println!("agent:          health server disabled"),
    }
    if inspection.drift.is_empty() {
        println!("drift:          none");
    } else {
        println!("drift:          {} differences (kproxy debug diff lists them)", inspection.drift.len());
    }
    ExitCode::SUCCESS
}

/// A wildcard bind address as the local address to ask.
fn loopback(address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], address.port())) } else { address }
}

/// A minimal HTTP/1.0 GET on the agent's own health port.
async fn http_get(address: SocketAddr, path: &str) -> Result<String, String> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.map_err(|e| e.to_string())?;
        let status = response.lines().next().unwrap_or_default().to_string();
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
        Ok(format!("{status} {body}"))
    };
    tokio::time::timeout(Duration::from_secs(2), request).await.map_err(|_| "timed out".to_string())?
}
