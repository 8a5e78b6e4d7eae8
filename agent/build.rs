//! Records the git commit the binary is built from, for `kproxy --version`: the
//! `KPROXY_GIT_COMMIT` environment variable when set (container builds have no `.git`), else
//! `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KPROXY_GIT_COMMIT");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    let commit = std::env::var("KPROXY_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let output = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    });
    println!("cargo:rustc-env=KPROXY_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
