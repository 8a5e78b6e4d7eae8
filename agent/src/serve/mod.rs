//! What the agent tells the outside: health (`/healthz`, `/livez`), metrics (`/metrics`,
//! `/proxyMode`), fed by the sync loop through one shared [`Status`].

pub mod health;
pub mod health_check;
pub mod http;
pub mod metrics;

/// The state the sync loop publishes and the HTTP servers read.
pub struct Status {
    /// Sync progress and node eligibility, for `/healthz` and `/livez`.
    pub health: health::Health,
    /// Prometheus metrics under kube-proxy's names.
    pub metrics: metrics::Metrics,
}
