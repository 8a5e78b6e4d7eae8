//! Kubernetes Events for problems an operator should see on the object itself
//! (`kubectl describe service`), not only in the agent's log.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::plan::Warning;

/// The controller name Events are reported under.
const CONTROLLER: &str = "kproxy";

/// Publishes Warning Events through the API (`events.k8s.io/v1`, create and patch).
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events reported by the agent on `node`.
    pub fn new(client: kube::Client, node: &str) -> Events {
        let reporter = Reporter { controller: CONTROLLER.into(), instance: Some(node.to_string()) };
        Events { recorder: Recorder::new(client, reporter) }
    }

    /// A Warning Event on the Service the warning is about; a failure to publish is logged.
    pub async fn warn(&self, warning: &Warning) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(warning.service.namespace.clone()),
            name: Some(warning.service.name.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: warning.reason.into(),
            note: Some(warning.message.clone()),
            action: "Programming".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!("cannot publish an Event on Service {}: {e}", warning.service);
        }
    }
}
