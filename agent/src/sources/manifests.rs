//! The manifests source: Services, EndpointSlices and Nodes read from a directory of YAML files.
//!
//! Reading ([`ManifestFiles::read`]) and parsing ([`ManifestFiles::parse`]) are separate so that
//! the source can tell cheaply whether anything changed. Every problem names the file, the
//! document and, where known, the object; a bad document never hides the good ones.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{Changes, InputError, Origin, Snapshot, Source};

/// The directory itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read manifests directory {}: {source}", dir.display())]
pub struct ReadDirError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The manifest files of a directory with their contents, in file-name order.
#[derive(Debug, PartialEq, Eq)]
pub struct ManifestFiles {
    files: Vec<(PathBuf, Result<String, String>)>,
}

impl ManifestFiles {
    /// Reads every `*.yaml` and `*.yml` file directly in `dir`, except hidden ones (editors and
    /// ConfigMap volumes keep scratch copies under dot-names). A file that cannot be read is
    /// kept as an error for [`ManifestFiles::parse`] to report.
    pub fn read(dir: &Path) -> Result<ManifestFiles, ReadDirError> {
        let files = manifest_paths(dir)?.into_iter().map(|path| {
            let text = read_text(&path);
            (path, text)
        });
        Ok(ManifestFiles { files: files.collect() })
    }

    /// Parses every document: Services and Nodes (`v1`) and EndpointSlices (`discovery.k8s.io/v1`), also
    /// inside `kind: List`; other kinds are skipped silently, as `kubectl get -o yaml` output
    /// and application manifests mix them in.
    pub fn parse(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for parsed in parse_files(&self.files) {
            snapshot.extend(&parsed);
        }
        snapshot
    }
}

/// The manifest files directly in `dir`, in name order (see [`ManifestFiles::read`]).
fn manifest_paths(dir: &Path) -> Result<Vec<PathBuf>, ReadDirError> {
    let error = |source| ReadDirError { dir: dir.to_path_buf(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(error)? {
        let path = entry.map_err(error)?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        let manifest = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if !hidden && manifest && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Below this much YAML, files are parsed on the calling thread: each parser thread leaves
/// an allocator arena behind, which costs more memory than a small parse saves in time.
const PARALLEL_PARSE_BYTES: usize = 4 << 20;

/// Parses `files`, each file whole on one thread, on every core when there is enough to parse:
/// at 10k Services (16 MiB), parsing YAML is most of an agent's start. The snapshots come back
/// in the order of `files`.
fn parse_files(files: &[(PathBuf, Result<String, String>)]) -> Vec<Snapshot> {
    let bytes: usize = files.iter().map(|(_, text)| text.as_ref().map_or(0, String::len)).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len());
    if workers <= 1 || bytes < PARALLEL_PARSE_BYTES {
        return files.iter().map(|(path, text)| parse_file(path, text)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut parsed: Vec<Option<Snapshot>> = vec![None; files.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, text)) = files.get(index) else { return done };
                        done.push((index, parse_file(path, text)));
                    }
                })
            })
            .collect();
        for worker in workers {
            for (index, snapshot) in worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                parsed[index] = Some(snapshot);
            }
        }
    });
    parsed.into_iter().flatten().collect()
}

/// Parses one file's documents (see [`ManifestFiles::parse`]).
fn parse_file(file: &Path, text: &Result<String, String>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let file_error = |message: String| InputError { location: file.display().to_string(), message };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            snapshot.errors.push(file_error(format!("cannot read: {e}")));
            return snapshot;
        }
    };
    let documents: Vec<Value> = match serde_saphyr::from_multiple_with_options(text, yaml_options()) {
        Ok(documents) => documents,
        Err(e) => {
            snapshot.errors.push(file_error(format!("not valid YAML: {e}")));
            return snapshot;
        }
    };
    for (index, document) in documents.into_iter().enumerate() {
        add_document(&mut snapshot, Origin::File { file: file.to_path_buf(), document: index + 1 }, document);
    }
    snapshot
}

/// The YAML parser's limits: the defaults (1024 documents, 250k nodes) would refuse a
/// cluster-sized manifest file whole; alias and anchor limits stay, against alias bombs.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 100_000_000;
    budget.max_events = 400_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Adds one document's object (a list's objects) to the snapshot, or the reason it cannot.
fn add_document(snapshot: &mut Snapshot, origin: Origin, document: Value) {
    if document.is_null() {
        return;
    }
    if !document.is_object() {
        let message = "not a Kubernetes object (a YAML mapping with apiVersion and kind)".into();
        snapshot.errors.push(InputError { location: origin.to_string(), message });
        return;
    }
    let field = |name: &str| document.get(name).and_then(Value::as_str).unwrap_or("").to_string();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let name = document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(|n| format!(" {kind} {n}"))
        .unwrap_or_default();
    let error = |message: String| InputError { location: format!("{origin}:{name}"), message };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => match serde_json::from_value(document) {
            Ok(object) => snapshot.add_service(&origin, &object),
            Err(e) => snapshot.errors.push(error(format!("not a valid Service: {e}"))),
        },
        ("discovery.k8s.io/v1", "EndpointSlice") => match serde_json::from_value(document) {
            Ok(object) => snapshot.add_endpoint_slice(&origin, &object),
            Err(e) => snapshot.errors.push(error(format!("not a valid EndpointSlice: {e}"))),
        },
        ("v1", "Node") => match serde_json::from_value(document) {
            Ok(object) => snapshot.nodes.push(Arc::new(object)),
            Err(e) => snapshot.errors.push(error(format!("not a valid Node: {e}"))),
        },
        (_, "List" | "ServiceList" | "EndpointSliceList") => {
            if let Some(Value::Array(items)) = document.get("items") {
                for item in items.clone() {
                    add_document(snapshot, origin.clone(), item);
                }
            }
        }
        (_, "") => snapshot.errors.push(error("has no kind".into())),
        _ => {
            tracing::debug!(%origin, %api_version, %kind, "skipping an object of a kind kproxy does not read")
        }
    }
}

/// A manifests directory as a [`Source`], read again every `interval`.
pub struct ManifestSource {
    dir: PathBuf,
    interval: Duration,
    /// The files last read, each with what it parsed to: a change re-parses only the files
    /// that changed, which at thousands of Services is most of a sync's cost.
    parsed: Option<Vec<ParsedFile>>,
    read_error: Option<String>,
}

/// One manifest file: a digest of what was read, and what it parsed to. The text itself is
/// not kept: at 10k Services it is 16 MiB.
struct ParsedFile {
    path: PathBuf,
    digest: Digest,
    snapshot: Snapshot,
}

/// What identifies a file's contents (or the error reading it): its length and a 64-bit hash.
type Digest = (usize, u64);

fn digest(text: &Result<String, String>) -> Digest {
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    (text.as_ref().map_or_else(String::len, String::len), hasher.finish())
}

impl ManifestSource {
    /// Watches `dir`, reading it every `interval`.
    pub fn new(dir: PathBuf, interval: Duration) -> ManifestSource {
        ManifestSource { dir, interval, parsed: None, read_error: None }
    }

    /// Reads the directory and reports whether its files differ from the last reading. A
    /// directory that cannot be read is logged once and changes nothing: the rules stay.
    fn poll(&mut self) -> bool {
        let paths = match manifest_paths(&self.dir) {
            Ok(paths) => paths,
            Err(e) => {
                let message = e.to_string();
                if self.read_error.as_ref() != Some(&message) {
                    tracing::error!("{message}; keeping the rules in place");
                    self.read_error = Some(message);
                }
                return false;
            }
        };
        self.read_error = None;
        let first = self.parsed.is_none();
        let mut previous: HashMap<PathBuf, ParsedFile> =
            self.parsed.take().unwrap_or_default().into_iter().map(|f| (f.path.clone(), f)).collect();
        let mut changed = first;
        // Each file is either kept as parsed before (`Ok`) or to be parsed (`Err`, with its digest).
        let mut files: Vec<Result<ParsedFile, Digest>> = Vec::with_capacity(paths.len());
        let mut to_parse = Vec::new();
        for path in paths {
            let text = read_text(&path);
            let digest = digest(&text);
            match previous.remove(&path) {
                Some(old) if old.digest == digest => files.push(Ok(old)),
                _ => {
                    changed = true;
                    files.push(Err(digest));
                    to_parse.push((path, text));
                }
            }
        }
        changed |= !previous.is_empty();
        let mut parsed = parse_files(&to_parse).into_iter().zip(to_parse);
        let files = files
            .into_iter()
            .map(|file| {
                file.unwrap_or_else(|digest| {
                    let (snapshot, (path, _)) = parsed.next().expect("one parse per file to parse");
                    ParsedFile { path, digest, snapshot }
                })
            })
            .collect();
        self.parsed = Some(files);
        changed
    }
}

impl Source for ManifestSource {
    async fn ready(&mut self) {
        while !self.poll() && self.parsed.is_none() {
            tokio::time::sleep(self.interval).await;
        }
    }

    async fn changed(&mut self) -> Changes {
        loop {
            tokio::time::sleep(self.interval).await;
            if self.poll() {
                return Changes { services: 1, endpoint_slices: 1, node: 0 };
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for file in self.parsed.iter().flatten() {
            snapshot.extend(&file.snapshot);
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Snapshot {
        ManifestFiles { files: vec![(PathBuf::from("m.yaml"), Ok(text.into()))] }.parse()
    }

    #[test]
    fn parse_should_read_services_and_slices_from_multi_document_files_and_lists() {
        let m = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\n\
             spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  \
             metadata: {name: a-1, namespace: default, labels: {kubernetes.io/service-name: a}}\n  \
             addressType: IPv4\n  endpoints: [{addresses: [10.244.0.1]}]\n\
             - apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  \
             metadata: {name: a-2, namespace: default}\n  addressType: IPv4\n  endpoints: []\n---\n",
        );
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services[0].name.name, "a");
        assert_eq!(m.endpoint_slices.len(), 1);
        assert_eq!(m.endpoint_slices[0].model.name, "a-1");
        assert_eq!(m.errors.len(), 1, "{:?}", m.errors);
        let message = m.errors[0].to_string();
        assert!(message.starts_with("m.yaml: document 3: "), "a slice in a List is located: {message}");
    }

    #[test]
    fn parse_should_name_file_document_and_object_of_a_malformed_object() {
        let m = parse(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ok, namespace: default}\n\
             spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: eighty}]}\n",
        );
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.errors.len(), 1);
        let message = m.errors[0].to_string();
        assert!(message.starts_with("m.yaml: document 2: Service bad: not a valid Service:"), "{message}");
    }

    #[test]
    fn parse_should_keep_the_order_of_the_files_it_parses_in_parallel() {
        let files: Vec<_> = (0..9)
            .map(|i| {
                // A long comment takes the files past the size that is parsed in parallel.
                let padding = format!("# {}\n", "x".repeat(PARALLEL_PARSE_BYTES / 8));
                let text = format!(
                    "{padding}apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\n\
                     spec: {{clusterIP: 10.96.0.{i}, ports: [{{port: 80}}]}}\n"
                );
                (PathBuf::from(format!("{i}.yaml")), Ok(text))
            })
            .collect();
        let names: Vec<String> =
            ManifestFiles { files }.parse().services.iter().map(|s| s.name.name.clone()).collect();
        assert_eq!(names, (0..9).map(|i| format!("s{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn parse_should_report_a_file_that_is_not_yaml() {
        let m = parse("kind: Service\n  bad: [indent\n");
        assert_eq!(m.errors.len(), 1);
        assert!(m.errors[0].to_string().starts_with("m.yaml: not valid YAML"), "{}", m.errors[0]);
    }

    #[test]
    fn source_should_reparse_only_the_files_that_changed() {
        let dir = std::env::temp_dir().join(format!("kproxy-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let service = |name: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
                 spec: {{clusterIP: 10.96.0.1, ports: [{{port: 80}}]}}\n"
            )
        };
        std::fs::write(dir.join("a.yaml"), service("a")).unwrap();
        std::fs::write(dir.join("b.yaml"), service("b")).unwrap();
        let mut source = ManifestSource::new(dir.clone(), Duration::from_millis(10));
        assert!(source.poll(), "the first reading is a change");
        assert!(!source.poll(), "nothing changed");
        let before = source.snapshot();
        std::fs::write(dir.join("b.yaml"), service("b2")).unwrap();
        assert!(source.poll());
        let after = source.snapshot();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Arc::ptr_eq(&before.services[0], &after.services[0]), "a.yaml was not parsed again");
        assert_eq!(after.services[1].name.name, "b2");
    }
}
