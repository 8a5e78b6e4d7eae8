//! `v1` Service → [`model::Service`](crate::model::Service).

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;

use ipnet::IpNet;

use super::fields::{Fields, ignored_by_labels};
use super::{Converted, IgnoreReason, ObjectError, ObjectKind, Problem, SCHEDULER_ANNOTATION};
use crate::model::{Service, ServiceInfo, ServiceName, ServicePort, ServicePortName, TrafficPolicy};
use crate::sched::Scheduler;

/// Converts a Service, as kube-proxy's `ShouldSkipService` and service-port tracking do.
///
/// Every port is kept with the Service's cluster IPs (`spec.clusterIPs`, or `spec.clusterIP`
/// when the list is absent). Headless and ExternalName Services and the label-filtered ones are
/// [`Converted::Ignored`]; an unparsable address, a port out of range, an unknown protocol or a
/// missing field is an [`ObjectError`].
pub fn service(svc: &core::Service) -> Result<Converted<Service>, ObjectError> {
    let fields = Fields::new(ObjectKind::Service, &svc.metadata)?;
    fields.name("metadata.name", &fields.object.name, 63)?;
    if let Some(reason) = ignored_by_labels(svc.metadata.labels.as_ref()) {
        return Ok(Converted::Ignored(reason));
    }
    let spec = svc.spec.as_ref().ok_or_else(|| fields.error("spec", Problem::Missing))?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Converted::Ignored(IgnoreReason::ExternalName));
    }

    let (ip_field, ip_texts): (&str, Vec<&str>) = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ("spec.clusterIPs", ips.iter().map(String::as_str).collect()),
        _ => ("spec.clusterIP", spec.cluster_ip.as_deref().into_iter().collect()),
    };
    match ip_texts.first() {
        Some(&"None") => return Ok(Converted::Ignored(IgnoreReason::Headless)),
        None | Some(&"") => return Ok(Converted::Ignored(IgnoreReason::NoClusterIp)),
        Some(_) => {}
    }
    let cluster_ips: Vec<IpAddr> = ip_texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let field =
                if ip_field == "spec.clusterIPs" { format!("{ip_field}[{i}]") } else { ip_field.to_string() };
            fields.ip(field, text)
        })
        .collect::<Result<_, _>>()?;
    let mut warnings = Vec::new();
    let mut info = service_info(&fields, svc, spec, cluster_ips)?;
    let annotation = svc.metadata.annotations.as_ref().and_then(|a| a.get(SCHEDULER_ANNOTATION));
    if let Some(value) = annotation {
        info.scheduler = Scheduler::parse(value);
        if info.scheduler.is_none() {
            warnings.push(format!(
                "{}: annotation {SCHEDULER_ANNOTATION}: {value:?} is not a scheduler kproxy's nftables dataplane has (random, rr, sh, maglev); using the default",
                fields.object
            ));
        }
    }
    let info = Arc::new(info);
    let exposes_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));

    let name = ServiceName { namespace: fields.object.namespace.clone(), name: fields.object.name.clone() };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, port)| {
            let node_port = match port.node_port {
                Some(n) if exposes_node_ports && n != 0 => {
                    Some(fields.port(format!("spec.ports[{i}].nodePort"), n)?)
                }
                _ => None,
            };
            let port_name = port.name.clone().unwrap_or_default();
            if !port_name.is_empty() {
                fields.name(format!("spec.ports[{i}].name"), &port_name, 63)?;
            }
            Ok(ServicePort {
                name: ServicePortName {
                    service: name.clone(),
                    port: port_name,
                    protocol: fields
                        .protocol(format!("spec.ports[{i}].protocol"), port.protocol.as_deref())?,
                },
                port: fields.port(format!("spec.ports[{i}].port"), port.port)?,
                node_port,
                service: Arc::clone(&info),
            })
        })
        .collect::<Result<_, ObjectError>>()?;
    Ok(Converted::Accepted(Service { name, ports, warnings }))
}

/// kube-proxy's default ClientIP affinity timeout: three hours.
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The settings every port of the Service shares.
fn service_info(
    fields: &Fields,
    svc: &core::Service,
    spec: &core::ServiceSpec,
    cluster_ips: Vec<IpAddr>,
) -> Result<ServiceInfo, ObjectError> {
    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, text)| fields.ip(format!("spec.externalIPs[{i}]"), text))
        .collect::<Result<_, _>>()?;
    let ingress =
        svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    let load_balancer_ips = ingress
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, ingress)| ingress.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|(i, ingress)| ingress.ip.as_deref().filter(|ip| !ip.is_empty()).map(|ip| (i, ip)))
        .map(|(i, text)| fields.ip(format!("status.loadBalancer.ingress[{i}].ip"), text))
        .collect::<Result<_, _>>()?;
    let load_balancer_source_ranges = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, text)| {
            text.trim().parse::<IpNet>().map_err(|_| {
                fields.error(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    Problem::InvalidCidr { value: text.clone() },
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let policy = |value: Option<&str>| {
        if value == Some("Local") { TrafficPolicy::Local } else { TrafficPolicy::Cluster }
    };
    let external_policy = policy(spec.external_traffic_policy.as_deref());
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let health_check_node_port = match spec.health_check_node_port {
        Some(port)
            if spec.type_.as_deref() == Some("LoadBalancer") && external_policy == TrafficPolicy::Local =>
        {
            Some(fields.port("spec.healthCheckNodePort", port)?)
        }
        _ => None,
    };
    Ok(ServiceInfo {
        cluster_ips,
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges,
        external_policy,
        internal_policy: policy(spec.internal_traffic_policy.as_deref()),
        affinity_timeout,
        health_check_node_port,
        scheduler: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(spec: core::ServiceSpec) -> core::Service {
        core::Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32, protocol: Option<&str>) -> core::ServicePort {
        core::ServicePort {
            name: Some(name.into()),
            port,
            protocol: protocol.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn service_should_keep_every_port_with_every_cluster_ip() {
        let s = svc(core::ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            cluster_ips: Some(vec!["10.96.0.10".into(), "fd00::10".into()]),
            ports: Some(vec![
                port("http", 80, None),
                port("dns", 53, Some("UDP")),
                port("sig", 9, Some("SCTP")),
            ]),
            ..Default::default()
        });
        let Ok(Converted::Accepted(service)) = service(&s) else { panic!("not accepted") };
        let ports: Vec<String> = service.ports.iter().map(|p| format!("{} {}", p.name, p.port)).collect();
        assert_eq!(ports, ["shop/web:http/tcp 80", "shop/web:dns/udp 53", "shop/web:sig/sctp 9"]);
        assert_eq!(service.ports[0].service.cluster_ips.len(), 2);
    }

    #[test]
    fn service_should_ignore_headless_external_name_and_label_filtered_services() {
        let headless = svc(core::ServiceSpec { cluster_ip: Some("None".into()), ..Default::default() });
        assert_eq!(service(&headless), Ok(Converted::Ignored(IgnoreReason::Headless)));
        let external = svc(core::ServiceSpec { type_: Some("ExternalName".into()), ..Default::default() });
        assert_eq!(service(&external), Ok(Converted::Ignored(IgnoreReason::ExternalName)));
        for (label, reason) in [
            (super::super::SERVICE_PROXY_NAME_LABEL, IgnoreReason::OtherServiceProxy),
            (super::super::HEADLESS_LABEL, IgnoreReason::HeadlessLabel),
        ] {
            let mut s = svc(core::ServiceSpec { cluster_ip: Some("10.96.0.1".into()), ..Default::default() });
            s.metadata.labels = Some([(label.to_string(), "x".to_string())].into());
            assert_eq!(service(&s), Ok(Converted::Ignored(reason)));
        }
    }

    #[test]
    fn service_should_name_the_field_of_a_bad_port_protocol_or_address() {
        let cases = [
            (
                core::ServiceSpec { cluster_ip: Some("10.96.0.300".into()), ..Default::default() },
                "spec.clusterIP",
                "\"10.96.0.300\" is not an IP address",
            ),
            (
                core::ServiceSpec {
                    cluster_ip: Some("10.96.0.1".into()),
                    ports: Some(vec![port("a", 80, None), port("b", 70000, None)]),
                    ..Default::default()
                },
                "spec.ports[1].port",
                "70000 is not a port (1-65535)",
            ),
            (
                core::ServiceSpec {
                    cluster_ip: Some("10.96.0.1".into()),
                    ports: Some(vec![port("a", 80, Some("ICMP"))]),
                    ..Default::default()
                },
                "spec.ports[0].protocol",
                "\"ICMP\" is not a protocol (TCP, UDP or SCTP)",
            ),
        ];
        for (spec, field, problem) in cases {
            let err = service(&svc(spec)).unwrap_err();
            assert_eq!(err.to_string(), format!("Service shop/web: {field} {problem}"));
        }
    }

    #[test]
    fn service_should_report_a_missing_name_or_spec() {
        let nameless = core::Service::default();
        assert_eq!(
            service(&nameless).unwrap_err().to_string(),
            "Service default/?: metadata.name is missing"
        );
        let mut specless = svc(core::ServiceSpec::default());
        specless.spec = None;
        assert_eq!(service(&specless).unwrap_err().field, "spec");
    }
}
