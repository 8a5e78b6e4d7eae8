//! Running Rust code inside a network namespace: a fresh thread that has called `setns` runs the
//! closure, so the sockets it opens belong to that namespace.

use std::path::PathBuf;
use std::thread::{self, JoinHandle};

use crate::setns::enter_network_namespace;

/// Where `ip netns add NAME` binds a namespace.
pub fn namespace_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `work` in a new thread inside network namespace `name` and returns its result.
///
/// The closure may borrow from the caller. A panic inside it is re-raised in the caller, so an
/// assertion in the closure fails the test as usual.
///
/// # Panics
/// If the namespace cannot be entered (it does not exist, or we are not root).
pub fn run_in<T, F>(name: &str, work: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn_scoped(scope, || {
                enter(name);
                work()
            })
            .expect("spawn a thread");
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Spawns a long-lived thread inside network namespace `name` running `work`.
///
/// Used for servers and for client loops that run while the test does something else.
/// The caller owns the handle and must join it before the namespace is removed.
pub fn spawn_in<T, F>(name: &str, work: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let owned = name.to_owned();
    thread::Builder::new()
        .name(format!("netns {name}"))
        .spawn(move || {
            enter(&owned);
            work()
        })
        .expect("spawn a thread")
}

fn enter(name: &str) {
    let path = namespace_path(name);
    if let Err(error) = enter_network_namespace(&path) {
        panic!("cannot enter network namespace {}: {error}", path.display());
    }
}
