//! From parsed manifests to the desired ruleset: the rules crate's pipeline, with every
//! problem tied back to the file and document it came from.

use kproxy_rules::k8s::{self, Converted, ObjectError};
use kproxy_rules::model::{self, NodeContext};
use kproxy_rules::nft::{self, Ruleset};

use crate::manifests::{Located, ManifestError, Manifests};

/// The desired ruleset and what was left out of it.
#[derive(Debug)]
pub struct Plan {
    /// The tables to program.
    pub ruleset: Ruleset,
    /// Objects skipped as invalid, and frontends claimed twice.
    pub errors: Vec<ManifestError>,
    /// How many Service ports are programmed.
    pub service_ports: usize,
    /// How many endpoints those ports have, before selection.
    pub endpoints: usize,
}

/// Converts, joins and renders; an invalid object is reported and skipped, never fatal.
pub fn plan(manifests: &Manifests, node: &NodeContext) -> Plan {
    let mut errors = manifests.errors.clone();
    let services = convert(&manifests.services, k8s::service, &mut errors);
    let slices = convert(&manifests.endpoint_slices, k8s::endpoint_slice, &mut errors);
    let joined = model::join(&services, &slices);
    errors.extend(
        joined
            .conflicts
            .iter()
            .map(|c| ManifestError { location: "frontend conflict".into(), message: c.to_string() }),
    );
    Plan {
        ruleset: nft::render(&joined.ports, node),
        errors,
        service_ports: joined.ports.len(),
        endpoints: joined.ports.iter().map(|p| p.endpoints.len()).sum(),
    }
}

fn convert<K, M>(
    objects: &[Located<K>],
    conversion: fn(&K) -> Result<Converted<M>, ObjectError>,
    errors: &mut Vec<ManifestError>,
) -> Vec<M> {
    let mut accepted = Vec::new();
    for Located { origin, object } in objects {
        match conversion(object) {
            Ok(Converted::Accepted(model)) => accepted.push(model),
            Ok(Converted::Ignored(reason)) => tracing::debug!(%origin, %reason, "not proxied"),
            Err(e) => errors.push(ManifestError { location: origin.to_string(), message: e.to_string() }),
        }
    }
    accepted
}
