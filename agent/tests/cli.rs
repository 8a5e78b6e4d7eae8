//! The `kproxy` binary's command line, run as a user runs it: rendering, error reporting and
//! exit codes. No kernel is involved; the kernel e2e tests live in the `tests/` crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run kproxy")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, files: &[(&str, &str)]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kproxy-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn render_should_print_the_transaction_for_the_examples() {
    let out = kproxy(&[
        "debug",
        "render",
        "--manifests",
        examples().to_str().unwrap(),
        "--hostname-override",
        "node-a",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!("examples_nft", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn render_should_print_a_readable_listing_for_the_examples() {
    let dir = examples();
    let out = kproxy(&[
        "debug",
        "render",
        "--manifests",
        dir.to_str().unwrap(),
        "--hostname-override",
        "node-a",
        "--format",
        "listing",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!("examples_listing", String::from_utf8(out.stdout).unwrap());
}

const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: app}\n\
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: good-1, namespace: app, labels: {kubernetes.io/service-name: good}}\n\
addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.244.0.5]}]\n";

const BAD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: bad-port, namespace: app}\n\
spec: {clusterIP: 10.96.0.2, ports: [{name: http, port: 70000}]}\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: junk-1, namespace: app, labels: {kubernetes.io/service-name: good}}\n\
addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.244.0.999]}]\n---\n\
apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: orphan-1, namespace: app}\n\
addressType: IPv4\nendpoints: []\n";

#[test]
fn render_should_skip_and_name_each_bad_object_and_still_program_the_rest() {
    let dir =
        Scratch::new("bad", &[("a-good.yaml", GOOD), ("b-bad.yaml", BAD), ("c-broken.yaml", "kind: [")]);
    let out =
        kproxy(&["debug", "render", "--manifests", dir.0.to_str().unwrap(), "--hostname-override", "n"]);
    assert_eq!(out.status.code(), Some(1), "exit code signals skipped objects");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stdout.contains("10.96.0.1 . tcp . 80 . 0 comment \"app/good:http\" : 10.244.0.5 . 8080"),
        "{stdout}"
    );
    assert!(!stdout.contains("10.96.0.2"), "the bad Service is not programmed: {stdout}");
    let bad = dir.0.join("b-bad.yaml");
    let bad = bad.display();
    for expected in [
        format!("{bad}: document 1: Service app/bad-port: spec.ports[0].port 70000 is not a port (1-65535)"),
        format!(
            "{bad}: document 2: EndpointSlice app/junk-1: endpoints[0].addresses[0] \"10.244.0.999\" is not an IP address"
        ),
        format!(
            "{bad}: document 3: EndpointSlice app/orphan-1: metadata.labels[kubernetes.io/service-name] is missing"
        ),
        format!("{}: not valid YAML", dir.0.join("c-broken.yaml").display()),
    ] {
        assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");
    }
}

#[test]
fn render_should_fail_clearly_on_a_missing_directory() {
    let out = kproxy(&["debug", "render", "--manifests", "/nonexistent/kproxy-manifests"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("cannot read manifests directory /nonexistent/kproxy-manifests"), "{stderr}");
}

#[test]
fn usage_errors_should_exit_64() {
    assert_eq!(kproxy(&["debug", "render"]).status.code(), Some(64));
    assert_eq!(kproxy(&["frobnicate"]).status.code(), Some(64));
    assert_eq!(
        kproxy(&["run", "--manifests", "x", "--manifests-poll-interval", "soon"]).status.code(),
        Some(64)
    );
    assert_eq!(kproxy(&["--help"]).status.code(), Some(0));
}

#[test]
fn version_should_name_the_version_and_the_git_commit() {
    let out = kproxy(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("kproxy {} (commit ", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(!text.contains("(commit )"), "{text}");
}
