//! The gate every kernel test passes first: these tests need root (network namespaces, veth
//! pairs, nftables).

/// Returns `true` when the test may run (we are root).
///
/// Not root: when the environment variable `CI` is set this panics, because CI must run these
/// tests; otherwise it prints a loud `SKIPPED` line to stderr (past the output capture) and returns `false`, and the test
/// returns early.
///
/// ```no_run
/// if !kproxy_e2e::root_or_skip() {
///     return;
/// }
/// ```
#[must_use]
pub fn root_or_skip() -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("kernel e2e tests need root, and CI is set: run them as root");
    }
    say_skipped("kernel e2e tests need root");
    false
}

/// Prints `SKIPPED: <why>` straight to the process's stderr, past the test harness's output
/// capture, so that a test that did not run says so in every run's output.
pub fn say_skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
}

/// The effective user id of this process, read from `/proc/self/status` (no unsafe call needed).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    // Fields: real, effective, saved set, filesystem.
    uids.split_whitespace().nth(1)?.parse().ok()
}
