//! The agent's configuration: a `--config` YAML file using kube-proxy's field names where the
//! concept is the same, overridden by flags, validated once at start.
//!
//! ```yaml
//! apiVersion: kproxy.io/v1alpha1
//! kind: KProxyConfiguration
//! mode: nftables
//! clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
//! nodePortAddresses: [primary]
//! masqueradeAll: false
//! minSyncPeriod: 1s
//! syncPeriod: 30s
//! scheduler: random
//! healthzBindAddress: 0.0.0.0:10256
//! metricsBindAddress: 127.0.0.1:10249
//! hostnameOverride: node-a
//! ```
//!
//! An unknown key, a bad duration, CIDR or address stops the agent with a message naming the
//! key and the value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use kproxy_rules::sched::Scheduler;

use crate::cli::parse_duration;

/// The configuration file's `apiVersion`.
pub const API_VERSION: &str = "kproxy.io/v1alpha1";
/// The configuration file's `kind`.
pub const KIND: &str = "KProxyConfiguration";

/// A configuration value that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {message}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is not valid YAML or has keys kproxy does not know.
    #[error("config file {}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A key has a value kproxy cannot use.
    #[error("{key}: {value:?} {problem}")]
    Invalid {
        /// The key, as in the file (`minSyncPeriod`) or as a flag (`--min-sync-period`).
        key: String,
        /// The value.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

/// The dataplane kproxy programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// nftables, the default.
    Nftables,
}

/// Which node addresses NodePorts are served on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodePortAddress {
    /// The Node's primary address of each family (kube-proxy's default).
    Primary,
    /// Every node address in this CIDR.
    Cidr(IpNet),
}

/// The configuration in effect, after the file, the flags and the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// `mode`.
    pub mode: ProxyMode,
    /// `hostnameOverride`: the node's name; the host name when absent.
    pub hostname_override: Option<String>,
    /// `clusterCIDR`: the pod CIDRs, one per family at most.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidrs: Vec<IpNet>,
    /// `nodePortAddresses`.
    pub node_port_addresses: Vec<NodePortAddress>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// `minSyncPeriod`: the least time between two syncs; changes in between coalesce.
    #[serde(serialize_with = "serialize_duration")]
    pub min_sync_period: Duration,
    /// `syncPeriod`: how often the tables are replaced in full, repairing any drift.
    #[serde(serialize_with = "serialize_duration")]
    pub sync_period: Duration,
    /// `scheduler`: the selection algorithm of Services without a `kproxy.io/scheduler`
    /// annotation (`random`, kube-proxy's, by default).
    #[serde(serialize_with = "serialize_scheduler")]
    pub scheduler: Scheduler,
    /// `healthzBindAddress`; `None` (an empty value) disables the server.
    pub healthz_bind_address: Option<SocketAddr>,
    /// `metricsBindAddress`; `None` (an empty value) disables the server.
    pub metrics_bind_address: Option<SocketAddr>,
}

impl Default for Config {
    /// kube-proxy's defaults.
    fn default() -> Config {
        Config {
            mode: ProxyMode::Nftables,
            hostname_override: None,
            cluster_cidrs: Vec::new(),
            node_port_addresses: vec![NodePortAddress::Primary],
            masquerade_all: false,
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            scheduler: Scheduler::Random,
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
        }
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

fn serialize_scheduler<S: serde::Serializer>(scheduler: &Scheduler, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(scheduler.as_str())
}

/// The raw settings, as a file or the flags give them: every one optional, all text.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// `apiVersion` (files only).
    pub api_version: Option<String>,
    /// `kind` (files only).
    pub kind: Option<String>,
    /// `mode`.
    pub mode: Option<String>,
    /// `hostnameOverride`.
    pub hostname_override: Option<String>,
    /// `clusterCIDR`: comma-separated.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// `nodePortAddresses`.
    pub node_port_addresses: Option<Vec<String>>,
    /// `masqueradeAll`.
    pub masquerade_all: Option<bool>,
    /// `minSyncPeriod`.
    pub min_sync_period: Option<String>,
    /// `syncPeriod`.
    pub sync_period: Option<String>,
    /// `scheduler`.
    pub scheduler: Option<String>,
    /// `healthzBindAddress`.
    pub healthz_bind_address: Option<String>,
    /// `metricsBindAddress`.
    pub metrics_bind_address: Option<String>,
}

impl Settings {
    /// Reads a configuration file.
    pub fn from_file(file: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ConfigError::Read { file: file.to_path_buf(), message: e.to_string() })?;
        let settings: Settings = serde_saphyr::from_str(&text)
            .map_err(|e| ConfigError::Syntax { file: file.to_path_buf(), message: e.to_string() })?;
        let invalid = |key: &str, value: &str, problem: String| ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            problem,
        };
        if let Some(v) = settings.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(invalid("apiVersion", v, format!("is not {API_VERSION}")));
        }
        if let Some(k) = settings.kind.as_deref().filter(|k| *k != KIND) {
            return Err(invalid("kind", k, format!("is not {KIND}")));
        }
        Ok(settings)
    }

    /// These settings with every value of `over` that is set taking precedence.
    #[must_use]
    pub fn overridden_by(self, over: Settings) -> Settings {
        Settings {
            api_version: over.api_version.or(self.api_version),
            kind: over.kind.or(self.kind),
            mode: over.mode.or(self.mode),
            hostname_override: over.hostname_override.or(self.hostname_override),
            cluster_cidr: over.cluster_cidr.or(self.cluster_cidr),
            node_port_addresses: over.node_port_addresses.or(self.node_port_addresses),
            masquerade_all: over.masquerade_all.or(self.masquerade_all),
            min_sync_period: over.min_sync_period.or(self.min_sync_period),
            sync_period: over.sync_period.or(self.sync_period),
            scheduler: over.scheduler.or(self.scheduler),
            healthz_bind_address: over.healthz_bind_address.or(self.healthz_bind_address),
            metrics_bind_address: over.metrics_bind_address.or(self.metrics_bind_address),
        }
    }

    /// Validates every setting, filling the unset ones with the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let invalid = |key: &str, value: &str, problem: &str| ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            problem: problem.into(),
        };
        let mode = match self.mode.as_deref() {
            None | Some("" | "nftables") => ProxyMode::Nftables,
            Some(other) => return Err(invalid("mode", other, "is not a supported mode (nftables)")),
        };
        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(&text)
                .map_err(|_| invalid(key, &text, "is not a duration (e.g. 250ms, 1s, 1m30s)")),
        };
        let address = |key: &str, value: Option<String>, default: Option<SocketAddr>| match value {
            None => Ok(default),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| invalid(key, &text, "is not an address:port")),
        };
        let cidr = |key: &str, text: &str| {
            text.trim().parse::<IpNet>().map_err(|_| invalid(key, text, "is not a CIDR"))
        };
        let cluster_cidrs: Vec<IpNet> = self
            .cluster_cidr
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|c| !c.trim().is_empty())
            .map(|c| cidr("clusterCIDR", c))
            .collect::<Result<_, _>>()?;
        if cluster_cidrs.iter().filter(|c| matches!(c, IpNet::V4(_))).count() > 1
            || cluster_cidrs.iter().filter(|c| matches!(c, IpNet::V6(_))).count() > 1
        {
            return Err(invalid(
                "clusterCIDR",
                self.cluster_cidr.as_deref().unwrap_or(""),
                "has more than one CIDR of a family",
            ));
        }
        let node_port_addresses = match self.node_port_addresses {
            None => defaults.node_port_addresses,
            Some(list) => list
                .iter()
                .flat_map(|entry| entry.split(','))
                .filter(|e| !e.trim().is_empty())
                .map(|e| {
                    if e.trim() == "primary" {
                        Ok(NodePortAddress::Primary)
                    } else {
                        cidr("nodePortAddresses", e).map(NodePortAddress::Cidr)
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Config {
            mode,
            hostname_override: self.hostname_override.filter(|h| !h.is_empty()),
            cluster_cidrs,
            node_port_addresses,
            masquerade_all: self.masquerade_all.unwrap_or(defaults.masquerade_all),
            min_sync_period: duration("minSyncPeriod", self.min_sync_period, defaults.min_sync_period)?,
            sync_period: duration("syncPeriod", self.sync_period, defaults.sync_period)?,
            scheduler: match self.scheduler.as_deref() {
                None | Some("") => defaults.scheduler,
                Some(text) => Scheduler::parse(text).ok_or_else(|| {
                    invalid(
                        "scheduler",
                        text,
                        "is not a scheduler of the nftables dataplane (random, rr, sh, maglev)",
                    )
                })?,
            },
            healthz_bind_address: address(
                "healthzBindAddress",
                self.healthz_bind_address,
                defaults.healthz_bind_address,
            )?,
            metrics_bind_address: address(
                "metricsBindAddress",
                self.metrics_bind_address,
                defaults.metrics_bind_address,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Settings, ConfigError> {
        let path =
            std::env::temp_dir().join(format!("kproxy-config-{}-{}.yaml", std::process::id(), text.len()));
        std::fs::write(&path, text).unwrap();
        let settings = Settings::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        settings
    }

    #[test]
    fn config_should_default_to_kube_proxy_defaults() {
        let config = Settings::default().resolve().unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.healthz_bind_address.unwrap().to_string(), "0.0.0.0:10256");
        assert_eq!(config.metrics_bind_address.unwrap().to_string(), "127.0.0.1:10249");
    }

    #[test]
    fn config_should_read_kube_proxy_field_names_and_let_flags_override_them() {
        let settings = file(
            "apiVersion: kproxy.io/v1alpha1\nkind: KProxyConfiguration\nmode: nftables\n\
             clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\nnodePortAddresses: [primary, 192.168.0.0/24]\n\
             masqueradeAll: true\nminSyncPeriod: 100ms\nsyncPeriod: 1m\nhealthzBindAddress: \"\"\n\
             metricsBindAddress: 0.0.0.0:9999\nhostnameOverride: node-a\n",
        )
        .unwrap();
        let flags = Settings { min_sync_period: Some("2s".into()), ..Settings::default() };
        let config = settings.overridden_by(flags).resolve().unwrap();
        assert_eq!(config.cluster_cidrs.len(), 2);
        assert_eq!(config.node_port_addresses.len(), 2);
        assert!(config.masquerade_all);
        assert_eq!(config.min_sync_period, Duration::from_secs(2));
        assert_eq!(config.sync_period, Duration::from_secs(60));
        assert_eq!(config.healthz_bind_address, None);
        assert_eq!(config.hostname_override.as_deref(), Some("node-a"));
    }

    #[test]
    fn config_should_name_the_key_of_a_bad_value() {
        let cases = [
            (
                Settings { min_sync_period: Some("1x".into()), ..Default::default() },
                "minSyncPeriod: \"1x\" is not a duration",
            ),
            (
                Settings { cluster_cidr: Some("10.244.0.0/33".into()), ..Default::default() },
                "clusterCIDR: \"10.244.0.0/33\" is not a CIDR",
            ),
            (
                Settings { healthz_bind_address: Some("localhost".into()), ..Default::default() },
                "healthzBindAddress: \"localhost\" is not an address:port",
            ),
            (
                Settings { mode: Some("ipvs".into()), ..Default::default() },
                "mode: \"ipvs\" is not a supported mode",
            ),
            (
                Settings { node_port_addresses: Some(vec!["all".into()]), ..Default::default() },
                "nodePortAddresses: \"all\" is not a CIDR",
            ),
        ];
        for (settings, message) in cases {
            let error = settings.resolve().unwrap_err().to_string();
            assert!(error.starts_with(message), "{error:?} should start with {message:?}");
        }
    }

    #[test]
    fn config_file_should_refuse_unknown_keys_and_other_kinds() {
        let error = file("minSyncPeriod: 1s\niptables: {}\n").unwrap_err().to_string();
        assert!(error.contains("iptables"), "{error}");
        let error = file("kind: KubeProxyConfiguration\n").unwrap_err().to_string();
        assert!(error.starts_with("kind: \"KubeProxyConfiguration\" is not KProxyConfiguration"), "{error}");
    }
}
