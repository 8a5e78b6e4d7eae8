//! kube-proxy's health semantics.
//!
//! The proxy is healthy unless a change has been queued for longer than the health timeout
//! without being programmed (a sync that keeps failing, or a loop that is stuck); while it
//! starts up and nothing is queued it is healthy. `/healthz` additionally requires the node to
//! be *eligible*: not being deleted and not tainted `ToBeDeletedByClusterAutoscaler`, so that
//! load balancers stop sending traffic to a node on its way out (KEP-3836). `/livez` is the
//! same check without eligibility, for kubelet's liveness probe.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

/// The taint the cluster autoscaler puts on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Sync progress and node eligibility.
pub struct Health {
    timeout: Duration,
    state: Mutex<HealthState>,
}

#[derive(Clone, Copy)]
struct HealthState {
    last_updated: Option<Timestamp>,
    oldest_pending: Option<Timestamp>,
    node_eligible: bool,
}

/// The answer to one health request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// No change has waited longer than the timeout.
    pub healthy: bool,
    /// The node is not being deleted.
    pub node_eligible: bool,
    /// When the rules were last programmed (or found up to date).
    pub last_updated: Option<Timestamp>,
    /// Now.
    pub current_time: Timestamp,
}

impl HealthReport {
    /// The JSON body kube-proxy answers with.
    pub fn body(&self) -> String {
        let last_updated = self.last_updated.map(|t| t.to_string()).unwrap_or_default();
        format!(
            "{{\"lastUpdated\": {:?}, \"currentTime\": {:?}, \"nodeEligible\": {}, \"healthy\": {}}}",
            last_updated,
            self.current_time.to_string(),
            self.node_eligible,
            self.healthy
        )
    }
}

impl Health {
    /// Health with kube-proxy's timeout: a queued change older than `timeout` is unhealthy.
    pub fn new(timeout: Duration) -> Health {
        Health {
            timeout,
            state: Mutex::new(HealthState { last_updated: None, oldest_pending: None, node_eligible: true }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A change was queued at `now`; the oldest pending change is what counts.
    pub fn queued(&self, now: Timestamp) {
        self.with(|s| {
            s.oldest_pending.get_or_insert(now);
        });
    }

    /// Everything queued so far is programmed, as of `now`.
    pub fn updated(&self, now: Timestamp) {
        self.with(|s| {
            s.last_updated = Some(now);
            s.oldest_pending = None;
        });
    }

    /// Records whether the node may receive new traffic, from its Node object.
    pub fn set_node(&self, node: Option<&Node>) {
        let eligible = node.is_none_or(|node| {
            let deleting = node.metadata.deletion_timestamp.is_some();
            let tainted = node
                .spec
                .as_ref()
                .and_then(|spec| spec.taints.as_ref())
                .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
            !deleting && !tainted
        });
        self.with(|s| s.node_eligible = eligible);
    }

    /// The state at `now`.
    pub fn report(&self, now: Timestamp) -> HealthReport {
        let state = self.with(|s| *s);
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let late = state
            .oldest_pending
            .is_some_and(|queued| now.as_millisecond() - queued.as_millisecond() >= timeout_ms);
        HealthReport {
            healthy: !late,
            node_eligible: state.node_eligible,
            last_updated: state.last_updated,
            current_time: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn health_should_turn_unhealthy_only_when_a_queued_change_is_older_than_the_timeout() {
        let health = Health::new(Duration::from_secs(60));
        assert!(health.report(at(0)).healthy, "healthy while starting up");
        health.queued(at(0));
        health.queued(at(30));
        assert!(health.report(at(59)).healthy);
        assert!(!health.report(at(61)).healthy, "the oldest pending change counts");
        health.updated(at(62));
        let report = health.report(at(200));
        assert!(report.healthy);
        assert_eq!(report.last_updated, Some(at(62)));
    }

    #[test]
    fn health_should_mark_a_node_being_deleted_or_tainted_for_deletion_ineligible() {
        let health = Health::new(Duration::from_secs(60));
        let mut node = Node::default();
        health.set_node(Some(&node));
        assert!(health.report(at(0)).node_eligible);
        node.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: TO_BE_DELETED_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        health.set_node(Some(&node));
        assert!(!health.report(at(0)).node_eligible);
        node.spec = None;
        node.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
        health.set_node(Some(&node));
        assert!(!health.report(at(0)).node_eligible);
    }

    #[test]
    fn health_body_should_carry_kube_proxys_fields() {
        let health = Health::new(Duration::from_secs(60));
        health.updated(at(0));
        let body = health.report(at(5)).body();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["lastUpdated"], at(0).to_string());
        assert_eq!(value["currentTime"], at(5).to_string());
        assert_eq!(value["nodeEligible"], true);
        assert_eq!(value["healthy"], true);
    }
}
