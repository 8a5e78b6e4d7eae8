//! From a source's snapshot to the desired ruleset: the rules crate's join and render, with
//! every problem tied back to where the object came from.

use kproxy_rules::model::{self, NodeContext, ServiceName, ServicePortEndpoints};
use kproxy_rules::nft::{self, Ruleset};

use crate::sources::{InputError, Snapshot};

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

/// Joins and renders; the source has converted the objects and reported the invalid ones.
pub fn plan(snapshot: &Snapshot, node: &NodeContext) -> Plan {
    let mut errors = snapshot.errors.clone();
    let joined = model::join(
        snapshot.services.iter().map(AsRef::as_ref),
        snapshot.endpoint_slices.iter().map(|slice| &slice.model),
    );
    errors.extend(
        joined
            .conflicts
            .iter()
            .map(|c| InputError { location: "frontend conflict".into(), message: c.to_string() }),
    );
    let warnings = snapshot
        .services
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
