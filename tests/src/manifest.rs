//! Kubernetes manifests for the agent's `--manifests` directory: small builders for a ClusterIP
//! [`Service`] and an [`EndpointSlice`], and a [`ManifestDir`] that writes them atomically.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::client::Protocol;

/// Anything that renders as one YAML document.
pub trait Manifest {
    /// The YAML document, without a leading `---`.
    fn to_yaml(&self) -> String;
}

/// One port of a Service: `name`, `port`, `protocol` and `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name; the agent matches it against the EndpointSlice port of the same name.
    pub name: String,
    /// The Service (frontend) port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The endpoints' port.
    pub target_port: u16,
}

impl ServicePort {
    /// A TCP port `port` named `name` forwarding to `target_port`.
    #[must_use]
    pub fn tcp(name: &str, port: u16, target_port: u16) -> Self {
        Self { name: name.to_owned(), port, protocol: Protocol::Tcp, target_port }
    }

    /// A UDP port `port` named `name` forwarding to `target_port`.
    #[must_use]
    pub fn udp(name: &str, port: u16, target_port: u16) -> Self {
        Self { name: name.to_owned(), port, protocol: Protocol::Udp, target_port }
    }
}

/// A `v1` Service of type ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The IPv4 ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The ports.
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// A Service `namespace/name` with ClusterIP `cluster_ip` and no ports yet.
    ///
    /// # Panics
    /// If `cluster_ip` is not an IPv4 address.
    #[must_use]
    pub fn cluster_ip(namespace: &str, name: &str, cluster_ip: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cluster_ip: cluster_ip.parse().unwrap_or_else(|_| panic!("not an IPv4 address: {cluster_ip}")),
            ports: Vec::new(),
        }
    }

    /// Adds a port.
    #[must_use]
    pub fn port(mut self, port: ServicePort) -> Self {
        self.ports.push(port);
        self
    }

    /// The socket address of the Service port named `name`.
    ///
    /// # Panics
    /// If there is no such port.
    #[must_use]
    pub fn address(&self, port_name: &str) -> std::net::SocketAddr {
        let port = self
            .ports
            .iter()
            .find(|port| port.name == port_name)
            .unwrap_or_else(|| panic!("service {} has no port named {port_name:?}", self.name));
        (self.cluster_ip, port.port).into()
    }
}

impl Manifest for Service {
    fn to_yaml(&self) -> String {
        let mut yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"{}\"\n  namespace: \"{}\"\n\
             spec:\n  type: ClusterIP\n  clusterIP: \"{ip}\"\n  clusterIPs: [\"{ip}\"]\n  \
             ipFamilies: [\"IPv4\"]\n  ports:\n",
            self.name,
            self.namespace,
            ip = self.cluster_ip,
        );
        if self.ports.is_empty() {
            yaml.truncate(yaml.len() - 1);
            yaml.push_str(" []\n");
        }
        for port in &self.ports {
            let _ = write!(
                yaml,
                "  - name: \"{}\"\n    port: {}\n    protocol: {}\n    targetPort: {}\n",
                port.name,
                port.port,
                port.protocol.kubernetes_name(),
                port.target_port
            );
        }
        yaml
    }
}

/// One port of an EndpointSlice: `name`, `port`, `protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// Must equal the name of the Service port it serves.
    pub name: String,
    /// The port the endpoints listen on.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// One endpoint: an address and its conditions, on node `node1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's IPv4 address.
    pub address: Ipv4Addr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: String,
}

impl Endpoint {
    /// An endpoint with explicit conditions.
    #[must_use]
    pub fn with_conditions(address: Ipv4Addr, ready: bool, serving: bool, terminating: bool) -> Self {
        Self { address, ready, serving, terminating, node_name: crate::NODE_NAME.to_owned() }
    }

    /// Ready and serving, not terminating: gets traffic.
    #[must_use]
    pub fn ready(address: Ipv4Addr) -> Self {
        Self::with_conditions(address, true, true, false)
    }

    /// Not ready, not serving, not terminating (a pod still starting): never gets traffic.
    #[must_use]
    pub fn not_ready(address: Ipv4Addr) -> Self {
        Self::with_conditions(address, false, false, false)
    }

    /// Terminating but still serving: gets traffic only when no endpoint is ready.
    #[must_use]
    pub fn serving_terminating(address: Ipv4Addr) -> Self {
        Self::with_conditions(address, false, true, true)
    }

    /// Terminating and no longer serving: never gets traffic.
    #[must_use]
    pub fn terminating_not_serving(address: Ipv4Addr) -> Self {
        Self::with_conditions(address, false, false, true)
    }
}

/// A `discovery.k8s.io/v1` EndpointSlice (`addressType: IPv4`) belonging to one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Kubernetes namespace (the Service's).
    pub namespace: String,
    /// The slice's own name.
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service_name: String,
    /// The ports.
    pub ports: Vec<EndpointPort>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl EndpointSlice {
    /// An empty slice for `service`, named `<service>-1`, with one port per Service port
    /// (same name and protocol, `port` = the Service port's `targetPort`).
    #[must_use]
    pub fn for_service(service: &Service) -> Self {
        Self {
            namespace: service.namespace.clone(),
            name: format!("{}-1", service.name),
            service_name: service.name.clone(),
            ports: service
                .ports
                .iter()
                .map(|port| EndpointPort {
                    name: port.name.clone(),
                    port: port.target_port,
                    protocol: port.protocol,
                })
                .collect(),
            endpoints: Vec::new(),
        }
    }

    /// Renames the slice (a Service may have several).
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Adds an endpoint.
    #[must_use]
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds several endpoints.
    #[must_use]
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }
}

impl Manifest for EndpointSlice {
    fn to_yaml(&self) -> String {
        let mut yaml = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: \"{}\"\n  \
             namespace: \"{}\"\n  labels:\n    kubernetes.io/service-name: \"{}\"\naddressType: IPv4\n",
            self.name, self.namespace, self.service_name
        );
        yaml.push_str(if self.ports.is_empty() { "ports: []\n" } else { "ports:\n" });
        for port in &self.ports {
            let _ = write!(
                yaml,
                "- name: \"{}\"\n  port: {}\n  protocol: {}\n",
                port.name,
                port.port,
                port.protocol.kubernetes_name()
            );
        }
        yaml.push_str(if self.endpoints.is_empty() { "endpoints: []\n" } else { "endpoints:\n" });
        for endpoint in &self.endpoints {
            let _ = write!(
                yaml,
                "- addresses: [\"{}\"]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n  \
                 nodeName: \"{}\"\n",
                endpoint.address, endpoint.ready, endpoint.serving, endpoint.terminating, endpoint.node_name
            );
        }
        yaml
    }
}

/// The directory the agent watches (`--manifests`). Every write is atomic: the documents go to
/// a hidden temporary file in the same directory, which is then renamed over the target, so the
/// agent never reads half a file.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    path: PathBuf,
}

impl ManifestDir {
    /// Uses (and creates) the directory `path`.
    ///
    /// # Panics
    /// If the directory cannot be created.
    #[must_use]
    pub fn create(path: PathBuf) -> Self {
        fs::create_dir_all(&path).unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        Self { path }
    }

    /// The directory, to pass as `--manifests`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `documents` as one multi-document YAML file `file` (e.g. `web.yaml`), atomically.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write(&self, file: &str, documents: &[&dyn Manifest]) {
        let text =
            documents.iter().map(|document| format!("---\n{}", document.to_yaml())).collect::<String>();
        self.write_text(file, &text);
    }

    /// Writes raw text as file `file`, atomically.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_text(&self, file: &str, text: &str) {
        let target = self.path.join(file);
        let temporary = self.path.join(format!(".{file}.tmp"));
        fs::write(&temporary, text)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", temporary.display()));
        fs::rename(&temporary, &target)
            .unwrap_or_else(|error| panic!("cannot rename to {}: {error}", target.display()));
    }

    /// Removes file `file`.
    ///
    /// # Panics
    /// If the file cannot be removed.
    pub fn remove(&self, file: &str) {
        let target = self.path.join(file);
        fs::remove_file(&target)
            .unwrap_or_else(|error| panic!("cannot remove {}: {error}", target.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Service {
        Service::cluster_ip("default", "web", "10.96.0.10").port(ServicePort::tcp("http", 80, 8080))
    }

    #[test]
    fn service_should_render_cluster_ip_and_ports() {
        let yaml = web().port(ServicePort::udp("dns", 53, 5301)).to_yaml();
        assert_eq!(
            yaml,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"web\"\n  namespace: \"default\"\n\
             spec:\n  type: ClusterIP\n  clusterIP: \"10.96.0.10\"\n  clusterIPs: [\"10.96.0.10\"]\n  \
             ipFamilies: [\"IPv4\"]\n  ports:\n  - name: \"http\"\n    port: 80\n    protocol: TCP\n    \
             targetPort: 8080\n  - name: \"dns\"\n    port: 53\n    protocol: UDP\n    targetPort: 5301\n"
        );
    }

    #[test]
    fn endpoint_slice_should_render_conditions_and_label() {
        let slice = EndpointSlice::for_service(&web())
            .endpoint(Endpoint::serving_terminating(Ipv4Addr::new(10, 244, 0, 11)));
        assert_eq!(
            slice.to_yaml(),
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: \"web-1\"\n  \
             namespace: \"default\"\n  labels:\n    kubernetes.io/service-name: \"web\"\naddressType: IPv4\n\
             ports:\n- name: \"http\"\n  port: 8080\n  protocol: TCP\nendpoints:\n\
             - addresses: [\"10.244.0.11\"]\n  conditions: {ready: false, serving: true, terminating: true}\n  \
             nodeName: \"node1\"\n"
        );
    }

    #[test]
    fn endpoint_slice_should_render_no_endpoints_as_an_empty_list() {
        assert!(EndpointSlice::for_service(&web()).to_yaml().ends_with("endpoints: []\n"));
    }

    #[test]
    fn manifest_dir_should_replace_files_atomically() {
        let scratch = tempfile::tempdir().unwrap();
        let directory = ManifestDir::create(scratch.path().join("manifests"));
        directory.write("web.yaml", &[&web()]);
        directory.write("web.yaml", &[&web(), &EndpointSlice::for_service(&web())]);
        let names: Vec<_> =
            fs::read_dir(directory.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(names, ["web.yaml"]);
        let text = fs::read_to_string(directory.path().join("web.yaml")).unwrap();
        assert_eq!(text.matches("---\n").count(), 2);
    }
}
