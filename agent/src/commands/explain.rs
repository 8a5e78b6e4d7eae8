//! `kproxy debug explain`: where a new connection goes, computed from the same plan `run`
//! programs, from a manifests directory or the live API.

use std::process::ExitCode;

use kproxy_rules::explain::{Outcome, Packet, explain as trace};

use crate::cli::{ExplainArgs, OutputFormat, RunSource};
use crate::config::Config;
use crate::node::NodeSettings;
use crate::plan::plan;
use crate::sources::kube::KubeSource;
use crate::sources::manifests::ManifestFiles;
use crate::sources::{Snapshot, Source};

/// Prints the explanation; exits 1 when the inputs cannot be read.
pub async fn explain(args: &ExplainArgs) -> ExitCode {
    let config = match args.settings.resolve() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(78);
        }
    };
    let snapshot = match snapshot(&args.source, &config).await {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = NodeSettings::new(super::node_name(config.hostname_override.as_deref()), &config);
    let plan = plan(&snapshot, &settings.context(settings.find(&snapshot.nodes)));
    let (destination, protocol) = args.destination;
    let packet = Packet {
        source: args.from,
        destination: destination.ip(),
        protocol,
        port: destination.port(),
        from_node: args.from_node,
    };
    let explanation = match trace(&plan.ruleset, &packet) {
        Ok(explanation) => explanation,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match args.output {
        OutputFormat::Text => print!("{explanation}"),
        OutputFormat::Json => {
            let (outcome, endpoints) = match &explanation.outcome {
                Outcome::Endpoints(candidates) => (
                    "dnat",
                    candidates
                        .iter()
                        .map(|c| serde_json::json!({"endpoint": c.endpoint.to_string(), "probability": c.probability}))
                        .collect(),
                ),
                Outcome::Reject => ("reject", Vec::new()),
                Outcome::Drop => ("drop", Vec::new()),
                Outcome::NotAService => ("not-a-service", Vec::new()),
            };
            let value = serde_json::json!({
                "servicePort": explanation.service_port,
                "path": explanation.path,
                "outcome": outcome,
                "selection": explanation.selection,
                "endpoints": endpoints,
                "masquerade": explanation.masquerade,
            });
            println!("{value}");
        }
    }
    ExitCode::SUCCESS
}

/// One snapshot of the inputs: the manifests directory, or the API once every cache is ready.
pub async fn snapshot(source: &RunSource, config: &Config) -> Result<Snapshot, String> {
    if let Some(dir) = &source.manifests {
        return ManifestFiles::read(dir).map(|files| files.parse()).map_err(|e| e.to_string());
    }
    let client = super::kube_client(source.kubeconfig.as_deref()).await?;
    let mut source = KubeSource::start(client, &super::node_name(config.hostname_override.as_deref()));
    source.ready().await;
    Ok(source.snapshot())
}
