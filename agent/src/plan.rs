//! From a source's snapshot to the desired ruleset: the rules crate's pipeline, with every
//! problem tied back to where the object came from.

use kproxy_rules::k8s::{self, Converted, ObjectError};
use kproxy_rules::model::{self, NodeContext, ServiceName, ServicePortEndpoints};
use kproxy_rules::nft::{self, Ruleset};

use crate::sources::{InputError, Located, Snapshot};

/// The desired ruleset and what was left out of it.
#[derive(Debug)]
pub struct Plan {
    /// The tables to program.
    pub ruleset: Ruleset,
    /// Inputs that could not be read, objects skipped as invalid, frontends claimed twice.
    pub errors: Vec<InputError>,
    /// The Service ports programmed, with all their endpoints.
    pub ports: Vec<ServicePortEndpoints>,
    /// Problems that did not keep an object out (an unknown scheduler, say).
    pub warnings: Vec<Warning>,
}

/// A problem with a Service that is still programmed; logged, and an Event on the Service when
/// the agent follows the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The Service.
    pub service: ServiceName,
    /// A CamelCase reason, for the Event.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Plan {
    /// How many endpoints the programmed ports have, before selection.
    pub fn endpoint_count(&self) -> usize {
        self.ports.iter().map(|p| p.endpoints.len()).sum()
    }
}

/// Converts, joins and renders; an invalid object is reported and skipped, never fatal.
pub fn plan(snapshot: &Snapshot, node: &NodeContext) -> Plan {
    let mut errors = snapshot.errors.clone();
    let services = convert(&snapshot.services, |s| k8s::service(s), &mut errors);
    let slices = convert(&snapshot.endpoint_slices, |s| k8s::endpoint_slice(s), &mut errors);
    let joined = model::join(&services, &slices);
    errors.extend(
        joined
            .conflicts
            .iter()
            .map(|c| InputError { location: "frontend conflict".into(), message: c.to_string() }),
    );
    let warnings = services
        .iter()
        .flat_map(|s| {
            s.warnings.iter().map(|message| Warning {
                service: s.name.clone(),
                reason: "UnknownScheduler",
                message: message.clone(),
            })
        })
        .collect();
    Plan { ruleset: nft::render(&joined.ports, node), errors, ports: joined.ports, warnings }
}

fn convert<K, M>(
    objects: &[Located<K>],
    conversion: impl Fn(&K) -> Result<Converted<M>, ObjectError>,
    errors: &mut Vec<InputError>,
) -> Vec<M> {
    let mut accepted = Vec::new();
    for Located { origin, object } in objects {
        match conversion(object) {
            Ok(Converted::Accepted(model)) => accepted.push(model),
            Ok(Converted::Ignored(reason)) => tracing::debug!(%origin, %reason, "not proxied"),
            Err(e) => errors.push(InputError { location: origin.to_string(), message: e.to_string() }),
        }
    }
    accepted
}
