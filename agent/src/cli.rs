//! The command line: subcommands, flags and logging set-up.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, Settings};

/// The version `kproxy --version` prints: the crate version and the git commit.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("KPROXY_GIT_COMMIT"), ")");

/// kproxy: a kube-proxy replacement that programs Services with nftables.
#[derive(Debug, Parser)]
#[command(name = "kproxy", version = VERSION, about, propagate_version = true)]
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
    Cleanup(CleanupArgs),
}

/// `kproxy debug …`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the nftables rules for the Services and EndpointSlices in a directory.
    Render(RenderArgs),
    /// Print the configuration `kproxy run` would use with these flags, as JSON.
    Config(SettingsArgs),
    /// Print the Kubernetes API access the agent needs, as ClusterRole rules in JSON.
    Rbac,
    /// Explain where a new connection goes: Service, path, endpoints with their chances.
    Explain(ExplainArgs),
    /// Compare the desired tables with what the kernel holds; exit 1 on drift.
    Diff(InspectArgs),
    /// One screen: Services, endpoints, the running agent's last sync, drift.
    Status(InspectArgs),
}

/// `kproxy debug diff` and `kproxy debug status`: the desired state, and the kernel.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Where Services and EndpointSlices come from (as for `run`).
    #[command(flatten)]
    pub source: RunSource,
    /// Settings that change the rules (as for `run`; `status` also reads the agent's
    /// health and metrics addresses from them).
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The nft binary.
    #[command(flatten)]
    pub nft: NftArgs,
}

/// `kproxy debug explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The destination: `ADDRESS:PORT/PROTOCOL` (`10.96.0.10:80/tcp`, `[fd00::10]:53/udp`).
    #[arg(value_name = "DST:PORT/PROTO", value_parser = parse_destination)]
    pub destination: (std::net::SocketAddr, kproxy_rules::model::Protocol),
    /// The client address (for source hashing, Maglev, source ranges, masquerading).
    #[arg(long, value_name = "SRC")]
    pub from: Option<std::net::IpAddr>,
    /// The connection is opened by the node itself (the output hook), not by a pod or host.
    #[arg(long)]
    pub from_node: bool,
    /// Text for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where Services and EndpointSlices come from (as for `run`).
    #[command(flatten)]
    pub source: RunSource,
    /// Settings that change the rules (as for `run`).
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Output formats of `kproxy debug explain`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    /// A readable table.
    Text,
    /// JSON.
    Json,
}

/// Parses `ADDRESS:PORT/PROTOCOL`.
fn parse_destination(text: &str) -> Result<(std::net::SocketAddr, kproxy_rules::model::Protocol), String> {
    use kproxy_rules::model::Protocol;
    let (address, protocol) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => return Err(format!("{other:?} is not a protocol (tcp, udp, sctp)")),
    };
    let address =
        address.parse().map_err(|_| format!("{address:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"))?;
    Ok((address, protocol))
}

/// Access to the `nft` binary.
#[derive(Debug, Args)]
pub struct NftArgs {
    /// The nft binary to run.
    #[arg(long, value_name = "PATH", default_value = "nft")]
    pub nft: PathBuf,
}

/// `kproxy cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The nft binary.
    #[command(flatten)]
    pub nft: NftArgs,
    /// Also delete the tables kube-proxy's nftables mode leaves behind (`ip kube-proxy`,
    /// `ip6 kube-proxy`), for a node that ran kube-proxy before.
    #[arg(long)]
    pub kube_proxy: bool,
}

/// `kproxy run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where Services, EndpointSlices and the Node come from.
    #[command(flatten)]
    pub source: RunSource,
    /// Settings; they override the `--config` file.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// The nft binary.
    #[command(flatten)]
    pub nft: NftArgs,
    /// How often a `--manifests` directory is checked for changes.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_duration)]
    pub manifests_poll_interval: Duration,
}

/// The inputs of `kproxy run`: a manifests directory, or the Kubernetes API (in-cluster
/// configuration unless `--kubeconfig` names a file).
#[derive(Debug, Args)]
pub struct RunSource {
    /// Read Services and EndpointSlices from this directory instead of the API.
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// A kubeconfig file for the API server (default: the in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// Settings that the `--config` file can also give, under kube-proxy's names.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// A KProxyConfiguration YAML file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `mode`: the dataplane (nftables).
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// `hostnameOverride`: the node's name, as in the Node object; defaults to the host name.
    #[arg(long, value_name = "NODE")]
    pub hostname_override: Option<String>,
    /// `clusterCIDR`: the pod CIDRs, comma-separated, at most one per family.
    #[arg(long, value_name = "CIDRS")]
    pub cluster_cidr: Option<String>,
    /// `nodePortAddresses`: `primary` or CIDRs, comma-separated.
    #[arg(long, value_name = "ADDRESSES")]
    pub nodeport_addresses: Option<String>,
    /// `masqueradeAll`: masquerade all traffic to Services.
    #[arg(long)]
    pub masquerade_all: bool,
    /// `minSyncPeriod`: the least time between two syncs (default 1s); changes coalesce.
    #[arg(long, value_name = "DURATION")]
    pub min_sync_period: Option<String>,
    /// `syncPeriod`: how often every chain and set is rewritten to repair drift (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub sync_period: Option<String>,
    /// `scheduler`: the default selection algorithm: random, rr, sh or maglev (default random;
    /// a Service's `kproxy.io/scheduler` annotation overrides it).
    #[arg(long, value_name = "SCHEDULER")]
    pub scheduler: Option<String>,
    /// `healthzBindAddress`: /healthz and /livez (default 0.0.0.0:10256; empty disables).
    #[arg(long, value_name = "ADDRESS")]
    pub healthz_bind_address: Option<String>,
    /// `metricsBindAddress`: /metrics and /proxyMode (default 127.0.0.1:10249; empty disables).
    #[arg(long, value_name = "ADDRESS")]
    pub metrics_bind_address: Option<String>,
}

impl SettingsArgs {
    /// The configuration in effect: the file, overridden by the flags, over the defaults.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let flags = Settings {
            mode: self.proxy_mode.clone(),
            hostname_override: self.hostname_override.clone(),
            cluster_cidr: self.cluster_cidr.clone(),
            node_port_addresses: self.nodeport_addresses.clone().map(|a| vec![a]),
            masquerade_all: self.masquerade_all.then_some(true),
            min_sync_period: self.min_sync_period.clone(),
            sync_period: self.sync_period.clone(),
            scheduler: self.scheduler.clone(),
            healthz_bind_address: self.healthz_bind_address.clone(),
            metrics_bind_address: self.metrics_bind_address.clone(),
            ..Settings::default()
        };
        file.overridden_by(flags).resolve()
    }
}

/// `kproxy debug render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A directory of YAML manifests (multi-document files; `*.yaml`, `*.yml`).
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// Settings that change the rules (as for `run`).
    #[command(flatten)]
    pub settings: SettingsArgs,
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
