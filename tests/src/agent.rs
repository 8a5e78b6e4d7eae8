//! The real `kproxy` binary, run inside the lab's node namespace: finding it, starting it with
//! its output in a log file, and stopping it the two ways that matter (SIGKILL and SIGTERM).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::command::{self, describe};

/// How long `terminate` waits for the agent to exit after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `kproxy` binary under test: `$KPROXY_BIN`, else `kproxy` next to the test binary's
/// `deps/` directory (`target/<profile>/kproxy`).
///
/// # Panics
/// If the binary does not exist, with the command that builds it.
#[must_use]
pub fn kproxy_binary() -> PathBuf {
    let binary = match std::env::var_os("KPROXY_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let test_binary = std::env::current_exe().expect("the test binary's path");
            // target/<profile>/deps/<test> → target/<profile>/kproxy
            let profile_dir = test_binary
                .parent()
                .and_then(Path::parent)
                .expect("the test binary lives in target/<profile>/deps");
            profile_dir.join("kproxy")
        }
    };
    assert!(
        binary.is_file(),
        "the kproxy binary is missing at {} — build it: cargo build -p kproxy (or set KPROXY_BIN)",
        binary.display()
    );
    binary
}

/// A running (or stopped) agent: `ip netns exec <node> kproxy run --manifests DIR
/// --hostname-override node1`, stdout and stderr appended to [`Agent::log_path`].
///
/// Dropping the handle kills the agent if it still runs; so does dropping the lab.
#[derive(Debug)]
pub struct Agent {
    process: Arc<Mutex<AgentProcess>>,
}

/// The state shared between an [`Agent`] handle and the lab that must stop it.
#[derive(Debug)]
pub(crate) struct AgentProcess {
    node_netns: String,
    arguments: Vec<OsString>,
    log_path: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Agent {
    /// Prepares an agent for namespace `node_netns` with `arguments` after the binary, logging to
    /// `log_path`, and starts it.
    pub(crate) fn start_new(node_netns: &str, arguments: Vec<OsString>, log_path: PathBuf) -> Self {
        let agent = Self {
            process: Arc::new(Mutex::new(AgentProcess {
                node_netns: node_netns.to_owned(),
                arguments,
                log_path,
                child: None,
                starts: 0,
            })),
        };
        agent.start();
        agent
    }

    /// The shared state, for the lab's bookkeeping.
    pub(crate) fn shared(&self) -> Arc<Mutex<AgentProcess>> {
        Arc::clone(&self.process)
    }

    fn lock(&self) -> MutexGuard<'_, AgentProcess> {
        self.process.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the agent again (after [`Agent::kill`] or [`Agent::terminate`]).
    ///
    /// # Panics
    /// If it is already running or cannot be started.
    pub fn start(&self) {
        self.lock().start();
    }

    /// Kills the agent with SIGKILL (no chance to clean up) and reaps it.
    ///
    /// # Panics
    /// If the agent is not running.
    pub fn kill(&self) {
        let mut process = self.lock();
        assert!(process.child.is_some(), "kill: the agent is not running");
        process.kill("SIGKILL from the test");
    }

    /// Sends SIGTERM, waits for the agent to exit and asserts it exited with status 0.
    ///
    /// # Panics
    /// If the agent is not running, does not exit within [`TERMINATE_TIMEOUT`] (it is then
    /// killed) or exits with another status.
    pub fn terminate(&self) {
        let mut process = self.lock();
        let child = process.child.as_mut().expect("terminate: the agent is not running");
        let pid = child.id().to_string();
        command::run("kill", &["-TERM", pid.as_str()], None).expect_success();
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < TERMINATE_TIMEOUT => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    process.kill("did not exit after SIGTERM");
                    panic!("kproxy did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; killed it");
                }
                Err(error) => panic!("cannot wait for kproxy: {error}"),
            }
        };
        process.child = None;
        process.note(&format!("exited after SIGTERM in {:?} with {status}", started.elapsed()));
        eprintln!("kproxy exited {:?} after SIGTERM with {status}", started.elapsed());
        assert!(
            status.success(),
            "kproxy should exit 0 on SIGTERM, got {status}; log: {}",
            process.log_path.display()
        );
    }

    /// Kills the agent if it runs (SIGKILL), then starts it again.
    pub fn restart(&self) {
        let mut process = self.lock();
        if process.child.is_some() {
            process.kill("SIGKILL for restart");
        }
        process.start();
    }

    /// Whether the agent process is still alive.
    #[must_use]
    pub fn is_running(&self) -> bool {
        let mut process = self.lock();
        process.child.is_some() && process.exited().is_none()
    }

    /// The agent's process id while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// Where stdout and stderr go (all starts of this agent append to the same file).
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.lock().log_path.clone()
    }

    /// The log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.lock().stop_if_running();
    }
}

// === impl AgentProcess ===

impl AgentProcess {
    fn start(&mut self) {
        assert!(self.child.is_none(), "start: the agent is already running");
        self.starts += 1;
        let binary = kproxy_binary();
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.node_netns]).arg(&binary).args(&self.arguments);
        let line = describe(&command);
        self.note(&format!("start #{}: {line}", self.starts));
        let log = self.open_log();
        let stderr = log.try_clone().expect("clone the log file handle");
        command.stdin(Stdio::null()).stdout(log).stderr(stderr);
        let child = command.spawn().unwrap_or_else(|error| panic!("cannot start `{line}`: {error}"));
        eprintln!("kproxy started (pid {}), log: {}", child.id(), self.log_path.display());
        self.child = Some(child);
    }

    fn kill(&mut self, why: &str) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                self.note(&format!("had already exited with {status} ({why})"));
                return;
            }
            let _ = child.kill();
            let status = child.wait();
            self.note(&format!("killed ({why}): {status:?}"));
        }
    }

    /// Kills the process if it still runs; used on drop.
    pub(crate) fn stop_if_running(&mut self) {
        self.kill("test finished");
    }

    /// `Some(status)` when the process was started and has exited on its own.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Where the log is.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn open_log(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", self.log_path.display()))
    }

    /// Appends a line from the harness to the log, so the log tells the whole story.
    fn note(&self, text: &str) {
        let mut log = self.open_log();
        let _ = writeln!(log, "=== e2e: {text} ===");
    }
}
