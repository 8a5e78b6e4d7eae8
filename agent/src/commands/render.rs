//! `kproxy debug render`: print the rules for a manifests directory, without a kernel.

use std::process::ExitCode;

use kproxy_rules::nft::{Listing, Transaction};

use crate::cli::{RenderArgs, RenderFormat};
use crate::node::NodeSettings;
use crate::plan::plan;
use crate::sources::manifests::ManifestFiles;

/// Prints the transaction (or listing) to stdout and every skipped object to stderr; exits 1
/// when an object had to be skipped, so that scripts can tell.
pub fn render(args: &RenderArgs) -> ExitCode {
    let config = match args.settings.resolve() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(78);
        }
    };
    let files = match ManifestFiles::read(&args.manifests) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let snapshot = files.parse();
    let settings = NodeSettings::new(super::node_name(config.hostname_override.as_deref()), &config);
    let plan = plan(&snapshot, &settings.context(settings.find(&snapshot.nodes)));
    let text = match args.format {
        RenderFormat::Nft => Transaction::replace(&plan.ruleset).to_string(),
        RenderFormat::Listing => Listing(&plan.ruleset).to_string(),
    };
    // A reader that stops early (`| head`) closes the pipe: not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    for error in &plan.errors {
        tracing::error!("skipped: {error}");
    }
    if plan.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
