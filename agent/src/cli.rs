//! The command line: subcommands, flags and logging set-up.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kproxy: a kube-proxy replacement that programs Services with nftables.
#[derive(Debug, Parser)]
#[command(name = "kproxy", version, about, propagate_version = true)]
pub struct Cli {
    /// How log lines are written to stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Program this node's kernel from Services and EndpointSlices and keep it in sync.
    Run(RunArgs),
    /// Inspect what kproxy would program, without touching the kernel.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Delete kproxy's nftables tables (`ip kproxy`, `ip6 kproxy`) and nothing else.
    Cleanup(NftArgs),
}

/// `kproxy debug …`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the nftables rules for the Services and EndpointSlices in a directory.
    Render(RenderArgs),
}

/// Where Services and EndpointSlices come from, and which node they are planned for.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A directory of YAML manifests (multi-document files; `*.yaml`, `*.yml`).
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// The node's name, as in the Node object; defaults to the host name.
    #[arg(long, value_name = "NODE")]
    pub hostname_override: Option<String>,
}

/// Access to the `nft` binary.
#[derive(Debug, Args)]
pub struct NftArgs {
    /// The nft binary to run.
    #[arg(long, value_name = "PATH", default_value = "nft")]
    pub nft: PathBuf,
}

/// `kproxy run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Inputs.
    #[command(flatten)]
    pub source: SourceArgs,
    /// The nft binary.
    #[command(flatten)]
    pub nft: NftArgs,
    /// How often the manifests directory is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_duration)]
    pub manifests_poll_interval: Duration,
}

/// `kproxy debug render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Inputs.
    #[command(flatten)]
    pub source: SourceArgs,
    /// What to print.
    #[arg(long, value_enum, default_value_t = RenderFormat::Nft)]
    pub format: RenderFormat,
}

/// Output formats of `kproxy debug render`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RenderFormat {
    /// The transaction exactly as `kproxy run` sends it to `nft -f -`.
    Nft,
    /// The resulting tables in nft's block form, as `nft list table` shows them.
    Listing,
}

/// Parses durations written as kube-proxy's config does: `250ms`, `1s`, `1m30s`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration (examples: 250ms, 1s, 1m30s)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Sends `tracing` output to stderr in the chosen format; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_should_read_kube_proxy_style_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "10", "1x", "ms", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
