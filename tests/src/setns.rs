//! The one call into the kernel that std does not wrap: `setns(2)` for a network namespace.
//!
//! Everything else in the lab reaches namespaces through [`crate::netns`], which calls
//! [`enter_network_namespace`] in a thread of its own.

// Reason: `libc::setns` is an FFI call and has no safe wrapper in std; this module is kept to
// that single call so the unsafe surface of the crate is one line.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Moves the calling **thread** into the network namespace bound at `path`
/// (`/run/netns/<name>`, as created by `ip netns add`).
///
/// Only this thread changes namespace; the rest of the process stays where it was. Sockets the
/// thread creates afterwards live in the new namespace for their whole life.
pub(crate) fn enter_network_namespace(path: &Path) -> io::Result<()> {
    let namespace = File::open(path)?;
    // SAFETY: `namespace` is an open file descriptor that stays valid for the duration of the
    // call; `setns` only reads it and changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
