//! `discovery.k8s.io/v1` EndpointSlice → [`model::EndpointSlice`](crate::model::EndpointSlice).

use k8s_openapi::api::discovery::v1 as discovery;

use super::fields::{Fields, ignored_by_labels};
use super::{Converted, IgnoreReason, ObjectError, ObjectKind, Problem, SERVICE_NAME_LABEL};
use crate::model::{
    Conditions, EndpointSlice, EndpointSlicePort, Hints, IpFamily, ServiceName, SliceEndpoint,
};

/// Converts an EndpointSlice, as kube-proxy's EndpointSlice cache does.
///
/// The slice must name its Service with the `kubernetes.io/service-name` label. Each endpoint is
/// taken at its first address, with the API's condition defaults (ready and serving unless
/// false, terminating only if true). A port entry without a port number is dropped, as
/// kube-proxy drops it. FQDN slices and label-filtered slices are [`Converted::Ignored`]; an
/// unparsable address, an address of the wrong family, a port out of range or a missing field
/// is an [`ObjectError`] for the whole slice.
pub fn endpoint_slice(slice: &discovery::EndpointSlice) -> Result<Converted<EndpointSlice>, ObjectError> {
    let fields = Fields::new(ObjectKind::EndpointSlice, &slice.metadata)?;
    let labels = slice.metadata.labels.as_ref();
    if let Some(reason) = ignored_by_labels(labels) {
        return Ok(Converted::Ignored(reason));
    }
    let service = labels
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|name| !name.is_empty())
        .ok_or_else(|| fields.error(format!("metadata.labels[{SERVICE_NAME_LABEL}]"), Problem::Missing))?;
    fields.name(format!("metadata.labels[{SERVICE_NAME_LABEL}]"), service, 63)?;
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return Ok(Converted::Ignored(IgnoreReason::FqdnAddressType)),
        other => return Err(fields.error("addressType", Problem::UnknownAddressType { value: other.into() })),
    };

    let ports = slice
        .ports
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, port)| port.port.map(|number| (i, port, number)))
        .map(|(i, port, number)| {
            Ok(EndpointSlicePort {
                name: port.name.clone().unwrap_or_default(),
                port: fields.port(format!("ports[{i}].port"), number)?,
                protocol: fields.protocol(format!("ports[{i}].protocol"), port.protocol.as_deref())?,
            })
        })
        .collect::<Result<_, ObjectError>>()?;

    let endpoints = slice
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| {
            let text = endpoint
                .addresses
                .first()
                .ok_or_else(|| fields.error(format!("endpoints[{i}].addresses"), Problem::Missing))?;
            let field = format!("endpoints[{i}].addresses[0]");
            let address = fields.ip(field.clone(), text)?;
            if IpFamily::of(&address) != family {
                return Err(fields
                    .error(field, Problem::FamilyMismatch { value: text.clone(), address_type: family }));
            }
            let conditions = endpoint.conditions.as_ref();
            Ok(SliceEndpoint {
                address,
                conditions: Conditions {
                    ready: conditions.and_then(|c| c.ready).unwrap_or(true),
                    serving: conditions.and_then(|c| c.serving).unwrap_or(true),
                    terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                },
                node_name: endpoint.node_name.clone(),
                zone: endpoint.zone.clone(),
                hints: Hints {
                    for_zones: endpoint
                        .hints
                        .iter()
                        .flat_map(|h| h.for_zones.iter().flatten())
                        .map(|z| z.name.clone())
                        .collect(),
                    for_nodes: endpoint
                        .hints
                        .iter()
                        .flat_map(|h| h.for_nodes.iter().flatten())
                        .map(|n| n.name.clone())
                        .collect(),
                },
            })
        })
        .collect::<Result<_, ObjectError>>()?;

    Ok(Converted::Accepted(EndpointSlice {
        name: fields.object.name.clone(),
        service: ServiceName { namespace: fields.object.namespace.clone(), name: service.clone() },
        family,
        ports,
        endpoints,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(address_type: &str, addresses: &[&str]) -> discovery::EndpointSlice {
        discovery::EndpointSlice {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("shop".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            address_type: address_type.into(),
            endpoints: addresses
                .iter()
                .map(|a| discovery::Endpoint { addresses: vec![(*a).into()], ..Default::default() })
                .collect(),
            ports: Some(vec![
                discovery::EndpointPort { name: Some("http".into()), port: Some(8080), ..Default::default() },
                discovery::EndpointPort { name: Some("nil".into()), port: None, ..Default::default() },
            ]),
        }
    }

    #[test]
    fn endpoint_slice_should_apply_condition_defaults_and_drop_ports_without_numbers() {
        let mut s = slice("IPv4", &["10.0.0.1", "10.0.0.2"]);
        s.endpoints[1].conditions = Some(discovery::EndpointConditions {
            ready: Some(false),
            serving: None,
            terminating: Some(true),
        });
        let Ok(Converted::Accepted(converted)) = endpoint_slice(&s) else { panic!("not accepted") };
        assert_eq!(converted.service.to_string(), "shop/web");
        assert_eq!(converted.ports.len(), 1);
        assert_eq!(converted.endpoints[0].conditions, Conditions::READY);
        assert_eq!(
            converted.endpoints[1].conditions,
            Conditions { ready: false, serving: true, terminating: true }
        );
    }

    #[test]
    fn endpoint_slice_should_reject_junk_and_wrong_family_addresses() {
        let err = endpoint_slice(&slice("IPv4", &["10.0.0.1", "banana"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "EndpointSlice shop/web-abc: endpoints[1].addresses[0] \"banana\" is not an IP address"
        );
        let err = endpoint_slice(&slice("IPv4", &["fd00::1"])).unwrap_err();
        assert_eq!(err.field, "endpoints[0].addresses[0]");
        assert!(matches!(err.problem, Problem::FamilyMismatch { .. }));
        let err = endpoint_slice(&slice("IPv7", &[])).unwrap_err();
        assert_eq!(err.field, "addressType");
    }

    #[test]
    fn endpoint_slice_should_require_the_service_name_label() {
        let mut s = slice("IPv4", &["10.0.0.1"]);
        s.metadata.labels = None;
        let err = endpoint_slice(&s).unwrap_err();
        assert_eq!(err.field, "metadata.labels[kubernetes.io/service-name]");
    }

    #[test]
    fn endpoint_slice_should_ignore_fqdn_and_label_filtered_slices() {
        assert_eq!(
            endpoint_slice(&slice("FQDN", &["db.example"])),
            Ok(Converted::Ignored(IgnoreReason::FqdnAddressType))
        );
        let mut s = slice("IPv4", &["10.0.0.1"]);
        s.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(super::super::SERVICE_PROXY_NAME_LABEL.into(), "other".into());
        assert_eq!(endpoint_slice(&s), Ok(Converted::Ignored(IgnoreReason::OtherServiceProxy)));
    }
}
