//! The manifests in `daemonset/`, checked the way the API server and the agent will read them:
//! each one is a valid object of its Kubernetes type with nothing unknown or dropped, the
//! ClusterRole grants exactly what the binary says it needs (`kproxy debug rbac`), the
//! ConfigMap's `config.yaml` is a configuration the binary accepts (`kproxy debug config`),
//! and the DaemonSet runs the agent with its health endpoints probed and nothing but
//! CAP_NET_ADMIN. No cluster and no kernel are involved.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Probe, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The manifests the kustomization must list, and that the directory must hold besides it.
const MANIFESTS: [&str; 5] = [
    "serviceaccount.yaml",
    "clusterrole.yaml",
    "clusterrolebinding.yaml",
    "configmap.yaml",
    "daemonset.yaml",
];
const NAMESPACE: &str = "kube-system";
const NAME: &str = "kproxy";
const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The port of `healthzBindAddress`, where `/healthz` and `/livez` are served.
const HEALTHZ_PORT: i32 = 10256;

fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemonset")
}

fn read(file: &str) -> String {
    let path = daemonset_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A manifest as the YAML says it, untyped.
fn source(file: &str) -> Value {
    serde_saphyr::from_str(&read(file)).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"))
}

/// A manifest as its Kubernetes type, after checking that the type keeps every field of the
/// file and adds none: a misspelt or misplaced key would otherwise be dropped silently here, and
/// by the API server too.
fn typed<T: DeserializeOwned + Serialize>(file: &str) -> T {
    let source = source(file);
    let object: T = serde_json::from_value(source.clone())
        .unwrap_or_else(|e| panic!("{file} is not a valid {}: {e}", std::any::type_name::<T>()));
    let round_trip = serde_json::to_value(&object).expect("k8s-openapi objects serialize");
    let mut differences = Vec::new();
    differences_between("", &source, &round_trip, &mut differences);
    assert!(
        differences.is_empty(),
        "{file} does not survive a round trip through {}:\n{}",
        std::any::type_name::<T>(),
        differences.join("\n")
    );
    object
}

/// Where `file` and `round_trip` differ, one line per difference, named by JSON path.
fn differences_between(path: &str, file: &Value, round_trip: &Value, out: &mut Vec<String>) {
    match (file, round_trip) {
        (Value::Object(written), Value::Object(kept)) => {
            for (key, value) in written {
                let at = format!("{path}.{key}");
                match kept.get(key) {
                    Some(kept_value) => differences_between(&at, value, kept_value, out),
                    None => out.push(format!("{at}: dropped (the type has no such field)")),
                }
            }
            for key in kept.keys().filter(|key| !written.contains_key(*key)) {
                out.push(format!("{path}.{key}: added by the type"));
            }
        }
        (Value::Array(written), Value::Array(kept)) if written.len() == kept.len() => {
            for (index, (value, kept_value)) in written.iter().zip(kept).enumerate() {
                differences_between(&format!("{path}[{index}]"), value, kept_value, out);
            }
        }
        _ if file == round_trip => {}
        _ => out.push(format!("{path}: {file} in the file, {round_trip} after the round trip")),
    }
}

fn kproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kproxy")).args(args).output().expect("run kproxy")
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// A file in the temporary directory, removed when dropped.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn new(name: &str, text: &str) -> ScratchFile {
        let path = std::env::temp_dir().join(format!("kproxy-daemonset-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        ScratchFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a list of policy rules allows, one (API group, resource, verb) per permission, so that
/// rules compare by what they grant whatever their grouping and order.
fn permissions(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none(), "a rule limited to resourceNames: {rule:?}");
        assert!(rule.non_resource_urls.is_none(), "a rule for nonResourceURLs: {rule:?}");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    granted
}

fn cluster_role_rules() -> Vec<PolicyRule> {
    typed::<ClusterRole>("clusterrole.yaml").rules.expect("the ClusterRole has rules")
}

fn config_map_config() -> String {
    let config_map: ConfigMap = typed("configmap.yaml");
    config_map.data.and_then(|mut data| data.remove("config.yaml")).expect("the ConfigMap has config.yaml")
}

fn daemonset() -> DaemonSet {
    typed("daemonset.yaml")
}

fn agent_container(daemonset: &DaemonSet) -> Container {
    let pod = daemonset.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("a pod template");
    assert_eq!(pod.containers.len(), 1, "one container, the agent");
    pod.containers[0].clone()
}

// === the kustomization and the objects ===

#[test]
fn kustomization_should_list_exactly_the_other_manifests_of_the_directory() {
    let kustomization = source("kustomization.yaml");
    assert_eq!(kustomization["kind"], "Kustomization");
    assert_eq!(kustomization["namespace"], NAMESPACE);
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources is a list")
        .iter()
        .map(|r| r.as_str().expect("resources are file names"))
        .collect();
    let listed_set: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(listed.len(), listed_set.len(), "a manifest listed twice: {listed:?}");
    assert_eq!(listed_set, BTreeSet::from(MANIFESTS));

    let in_directory: BTreeSet<String> = std::fs::read_dir(daemonset_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .filter(|name| name != "kustomization.yaml")
        .collect();
    let listed_owned: BTreeSet<String> = listed_set.iter().map(|name| name.to_string()).collect();
    assert_eq!(in_directory, listed_owned, "every manifest in daemonset/ is applied, and only those");
}

#[test]
fn manifests_should_survive_a_round_trip_through_their_kubernetes_types() {
    typed::<ServiceAccount>("serviceaccount.yaml");
    typed::<ClusterRole>("clusterrole.yaml");
    typed::<ClusterRoleBinding>("clusterrolebinding.yaml");
    typed::<ConfigMap>("configmap.yaml");
    typed::<DaemonSet>("daemonset.yaml");
}

#[test]
fn manifests_should_share_the_name_label_and_namespace() {
    for file in MANIFESTS {
        let object = source(file);
        let metadata = &object["metadata"];
        let expected_name = if file == "configmap.yaml" { "kproxy-config" } else { NAME };
        assert_eq!(metadata["name"], expected_name, "{file}");
        assert_eq!(metadata["labels"][NAME_LABEL], NAME, "{file}");
        let cluster_scoped = file.starts_with("clusterrole");
        if cluster_scoped {
            assert!(metadata.get("namespace").is_none(), "{file} is cluster-scoped");
        } else {
            assert_eq!(metadata["namespace"], NAMESPACE, "{file}");
        }
    }
    let daemonset = daemonset();
    let spec = daemonset.spec.unwrap();
    let selector = spec.selector.match_labels.unwrap();
    let pod_labels = spec.template.metadata.and_then(|m| m.labels).unwrap();
    assert_eq!(selector.get(NAME_LABEL).map(String::as_str), Some(NAME));
    assert!(
        selector.iter().all(|(key, value)| pod_labels.get(key) == Some(value)),
        "the selector selects the pods"
    );
}

// === RBAC ===

#[test]
fn cluster_role_should_read_services_nodes_and_endpointslices_and_only_write_events() {
    let mut expected: BTreeSet<(String, String, String)> =
        [("", "services"), ("", "nodes"), ("discovery.k8s.io", "endpointslices")]
            .into_iter()
            .flat_map(|(group, resource)| {
                ["get", "list", "watch"]
                    .map(|verb| (group.to_string(), resource.to_string(), verb.to_string()))
            })
            .collect();
    for verb in ["create", "patch"] {
        expected.insert(("events.k8s.io".into(), "events".into(), verb.into()));
    }
    assert_eq!(permissions(&cluster_role_rules()), expected);
}

#[test]
fn cluster_role_should_grant_exactly_what_kproxy_debug_rbac_asks_for() {
    let out = kproxy(&["debug", "rbac"]);
    let printed = stdout_of(&out, "kproxy debug rbac");
    let needed: Vec<PolicyRule> = serde_json::from_str(&printed)
        .unwrap_or_else(|e| panic!("kproxy debug rbac prints PolicyRules as JSON ({e}):\n{printed}"));
    assert_eq!(permissions(&cluster_role_rules()), permissions(&needed));
}

#[test]
fn cluster_role_binding_should_give_the_cluster_role_to_the_agents_service_account() {
    let binding: ClusterRoleBinding = typed("clusterrolebinding.yaml");
    let role: ClusterRole = typed("clusterrole.yaml");
    let account: ServiceAccount = typed("serviceaccount.yaml");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.expect("the binding has subjects");
    assert_eq!(subjects.len(), 1, "only the agent's ServiceAccount: {subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, account.metadata.namespace);

    let pod = daemonset().spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name, account.metadata.name, "the DaemonSet runs as that account");
}

// === configuration ===

#[test]
fn config_map_should_hold_a_configuration_that_kproxy_accepts() {
    let file = ScratchFile::new("config.yaml", &config_map_config());
    let out = kproxy(&["debug", "config", "--config", file.path()]);
    let printed = stdout_of(&out, "kproxy debug config on the ConfigMap's config.yaml");
    let effective: Value = serde_json::from_str(&printed)
        .unwrap_or_else(|e| panic!("kproxy debug config prints JSON ({e}):\n{printed}"));
    assert_eq!(effective["mode"], "nftables", "{effective}");

    let address = |key: &str| -> SocketAddr {
        effective[key].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{key} in {effective}"))
    };
    let healthz = address("healthzBindAddress");
    assert!(healthz.ip().is_unspecified(), "the kubelet probes /healthz from outside the pod: {healthz}");
    assert_eq!(i32::from(healthz.port()), HEALTHZ_PORT, "the probes' port is the health server's");
    let metrics = address("metricsBindAddress");
    assert!(metrics.ip().is_loopback(), "/metrics stays reachable from the node only: {metrics}");
}

#[test]
fn config_check_should_refuse_the_config_map_with_an_unknown_key_and_name_it() {
    let broken = format!("{}conntrackMaxPerCore: 0\n", config_map_config());
    let file = ScratchFile::new("broken-config.yaml", &broken);
    let out = kproxy(&["debug", "config", "--config", file.path()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an unknown key must be refused:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("conntrackMaxPerCore"), "the message names the key: {stderr}");
}

#[test]
fn daemonset_should_run_the_agent_with_the_mounted_config_and_its_node_name() {
    let daemonset = daemonset();
    let pod = daemonset.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap();
    let container = agent_container(&daemonset);
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args, ["run", "--config", "/etc/kproxy/config.yaml", "--hostname-override", "$(NODE_NAME)"]);

    let node_name = container.env.iter().flatten().find(|e| e.name == "NODE_NAME").expect("NODE_NAME is set");
    let field = node_name.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("from a fieldRef");
    assert_eq!(field.field_path, "spec.nodeName");

    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/etc/kproxy")
        .expect("the config directory is mounted");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).expect("the mount's volume");
    let config_map: ConfigMap = typed("configmap.yaml");
    let source = volume.config_map.as_ref().expect("the config directory is the ConfigMap");
    assert_eq!(Some(&source.name), config_map.metadata.name.as_ref());
    assert!(config_map.data.unwrap().contains_key("config.yaml"), "--config names a key of the ConfigMap");
}

#[test]
fn daemonset_args_should_be_flags_that_kproxy_run_accepts() {
    let help = stdout_of(&kproxy(&["run", "--help"]), "kproxy run --help");
    let container = agent_container(&daemonset());
    for flag in container.args.iter().flatten().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag.as_str()), "kproxy run has no {flag}:\n{help}");
    }
}

// === pod shape, probes and privileges ===

#[test]
fn daemonset_should_run_in_the_nodes_network_on_every_node() {
    let spec = daemonset().spec.unwrap();
    let strategy = spec.update_strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(strategy.rolling_update.and_then(|r| r.max_unavailable), Some(IntOrString::Int(1)));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()),
        "tolerates every taint: {tolerations:?}"
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
}

#[test]
fn daemonset_should_probe_livez_for_liveness_and_healthz_for_readiness_on_the_health_port() {
    let container = agent_container(&daemonset());
    let probe = |probe: Option<&Probe>, what: &str| {
        let get = probe.and_then(|p| p.http_get.clone()).unwrap_or_else(|| panic!("an HTTP {what} probe"));
        (get.path.unwrap_or_default(), get.port)
    };
    assert_eq!(
        probe(container.liveness_probe.as_ref(), "liveness"),
        ("/livez".to_string(), IntOrString::Int(HEALTHZ_PORT))
    );
    assert_eq!(
        probe(container.readiness_probe.as_ref(), "readiness"),
        ("/healthz".to_string(), IntOrString::Int(HEALTHZ_PORT))
    );
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("healthz"))
        .expect("a healthz port");
    assert_eq!(port.container_port, HEALTHZ_PORT);
}

#[test]
fn daemonset_container_should_not_be_privileged_and_add_only_net_admin() {
    let container = agent_container(&daemonset());
    let security = container.security_context.expect("a securityContext");
    assert_ne!(security.privileged, Some(true), "not privileged");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_user, Some(0), "nft needs root with CAP_NET_ADMIN");
    let capabilities = security.capabilities.expect("capabilities are set");
    assert_eq!(capabilities.drop.unwrap_or_default(), ["ALL"]);
    assert_eq!(capabilities.add.unwrap_or_default(), ["NET_ADMIN"]);

    let resources = container.resources.expect("resources are set");
    let quantity = |map: &Option<BTreeMap<String, Quantity>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("50m"));
    assert_eq!(quantity(&resources.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(quantity(&resources.limits, "memory").as_deref(), Some("256Mi"));
}

// === the image ===

#[test]
fn containerfile_should_build_with_the_workspaces_rust_version_and_ship_nft_and_conntrack() {
    let workspace =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")).unwrap();
    let rust_version = workspace
        .lines()
        .find_map(|line| line.trim().strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("the workspace declares rust-version");
    let containerfile = read("Containerfile");
    let from = |stage: &str| containerfile.lines().any(|l| l.starts_with("FROM ") && l.contains(stage));
    assert!(from(&format!("rust:{rust_version}-bookworm")), "the build image is Rust {rust_version}");
    assert!(from("debian:bookworm-slim"), "the runtime image is bookworm-slim");
    for needed in [
        "cargo build --release -p kproxy --locked",
        "--no-install-recommends nftables conntrack",
        "rm -rf /var/lib/apt/lists/*",
        "/usr/local/bin/kproxy",
        "ENTRYPOINT [\"/usr/local/bin/kproxy\"]",
    ] {
        assert!(containerfile.contains(needed), "the Containerfile has {needed:?}");
    }
}
