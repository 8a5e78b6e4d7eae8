//! Prometheus metrics, under kube-proxy's names where the measurement is the same, so that
//! existing dashboards and alerts keep working; kproxy's own gauges are `kproxy_*`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A counter per HTTP status code, as `code="200"`.
pub type CodeCounter = Family<Vec<(String, String)>, Counter>;

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    /// `kubeproxy_sync_proxy_rules_duration_seconds`: time a sync takes, plan and apply.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`: when the last sync succeeded.
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`: when a change last arrived.
    pub last_queued_timestamp: Gauge<f64, AtomicU64>,
    /// `kubeproxy_network_programming_duration_seconds`: from an EndpointSlice's
    /// `endpoints.kubernetes.io/last-change-trigger-time` until its rules are programmed.
    pub network_programming_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes: Counter,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`.
    pub sync_failures: Counter,
    /// `kubeproxy_proxy_healthz_total{code}`.
    pub healthz: CodeCounter,
    /// `kubeproxy_proxy_livez_total{code}`.
    pub livez: CodeCounter,
    /// `kubeproxy_conntrack_reconciler_sync_duration_seconds`: time one stale UDP conntrack
    /// cleanup takes, list and delete.
    pub conntrack_reconciler_sync_duration: Histogram,
    /// `kubeproxy_conntrack_reconciler_deleted_entries_total`: stale UDP conntrack entries deleted.
    pub conntrack_reconciler_deleted_entries: Counter,
    /// `kproxy_services`: Service ports programmed.
    pub services: Gauge,
    /// `kproxy_endpoints`: endpoints of the programmed Service ports.
    pub endpoints: Gauge,
    /// `kproxy_chains`: chains in kproxy's tables.
    pub chains: Gauge,
    /// `kproxy_elements`: set and map elements in kproxy's tables.
    pub elements: Gauge,
    /// `kproxy_last_transaction_operations`: size of the last transaction.
    pub last_transaction_operations: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        // kube-proxy's buckets: 1 ms doubling 15 times; 0.25 s to 5 min for programming latency.
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let network_programming_duration = Histogram::new([
            0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
            120.0, 180.0, 240.0, 300.0,
        ]);
        let metrics = Metrics {
            sync_duration,
            last_sync_timestamp: Gauge::default(),
            last_queued_timestamp: Gauge::default(),
            network_programming_duration,
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            sync_failures: Counter::default(),
            healthz: CodeCounter::default(),
            livez: CodeCounter::default(),
            conntrack_reconciler_sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            conntrack_reconciler_deleted_entries: Counter::default(),
            services: Gauge::default(),
            endpoints: Gauge::default(),
            chains: Gauge::default(),
            elements: Gauge::default(),
            last_transaction_operations: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.sync_failures.clone(),
        );
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz.clone(),
        );
        registry.register("kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", m.livez.clone());
        registry.register(
            "kubeproxy_conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            m.conntrack_reconciler_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_conntrack_reconciler_deleted_entries",
            "Cumulative conntrack flows deleted by conntrack reconciler",
            m.conntrack_reconciler_deleted_entries.clone(),
        );
        registry.register("kproxy_services", "Service ports programmed", m.services.clone());
        registry.register(
            "kproxy_endpoints",
            "Endpoints of the programmed Service ports",
            m.endpoints.clone(),
        );
        registry.register("kproxy_chains", "Chains in kproxy's tables", m.chains.clone());
        registry.register("kproxy_elements", "Set and map elements in kproxy's tables", m.elements.clone());
        registry.register(
            "kproxy_last_transaction_operations",
            "Operations in the last nftables transaction",
            m.last_transaction_operations.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The counter for one HTTP status code.
    pub fn code(family: &CodeCounter, code: u16) -> Counter {
        family.get_or_create(&vec![("code".to_string(), code.to_string())]).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_should_be_exported_under_kube_proxys_names() {
        let metrics = Metrics::new();
        metrics.endpoint_changes.inc();
        Metrics::code(&metrics.healthz, 200).inc();
        let text = metrics.encode();
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "kubeproxy_network_programming_duration_seconds_bucket",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 1",
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
            "kubeproxy_proxy_healthz_total{code=\"200\"} 1",
            "kubeproxy_conntrack_reconciler_sync_duration_seconds_bucket",
            "kubeproxy_conntrack_reconciler_deleted_entries_total",
            "kproxy_services",
            "kproxy_last_transaction_operations",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
