//! `kproxy debug config` and `kproxy debug rbac`: what the agent would run with, and what API
//! access it needs.

use std::collections::BTreeMap;
use std::process::ExitCode;

use crate::cli::SettingsArgs;
use crate::sources::kube::API_ACCESS;

/// Prints the effective configuration as JSON, or the first problem with it.
pub fn config(args: &SettingsArgs) -> ExitCode {
    match args.resolve() {
        Ok(config) => {
            println!("{}", serde_json::to_string_pretty(&config).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(78)
        }
    }
}

/// Prints the RBAC rules the agent needs, as a JSON list of ClusterRole rules.
pub fn rbac() -> ExitCode {
    let mut rules: BTreeMap<(&str, Vec<&str>), Vec<&str>> = BTreeMap::new();
    for (group, resource, verbs) in API_ACCESS {
        rules.entry((*group, verbs.to_vec())).or_default().push(resource);
    }
    let rules: Vec<serde_json::Value> = rules
        .into_iter()
        .map(|((group, verbs), mut resources)| {
            resources.sort_unstable();
            serde_json::json!({ "apiGroups": [group], "resources": resources, "verbs": verbs })
        })
        .collect();
    println!("{}", serde_json::Value::Array(rules));
    ExitCode::SUCCESS
}
