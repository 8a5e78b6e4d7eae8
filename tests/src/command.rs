//! Running external programs (`ip`, `nft`, the agent's one-shot subcommands) with captured
//! output and a deadline, so a hung tool fails the test instead of hanging it.

use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long any one external command may take before it is killed and the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The result of a finished command: exit status and everything it printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub command: String,
    /// How the command exited.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl CommandOutput {
    /// Whether the command exited with status 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Returns stdout, or panics with the whole output when the command failed.
    #[track_caller]
    pub fn expect_success(self) -> String {
        assert!(self.success(), "command failed: {self}");
        self.stdout
    }
}

impl fmt::Display for CommandOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` exited with {}", self.command, self.status)?;
        if !self.stdout.is_empty() {
            write!(f, "\n--- stdout ---\n{}", self.stdout.trim_end())?;
        }
        if !self.stderr.is_empty() {
            write!(f, "\n--- stderr ---\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

/// Runs `program args…`, feeding `stdin` if given, and waits at most [`COMMAND_TIMEOUT`].
///
/// # Panics
/// If the program cannot be started or does not finish in time (it is killed first).
pub fn run<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S], stdin: Option<&str>) -> CommandOutput {
    let mut command = Command::new(program.as_ref());
    command.args(args);
    let line = describe(&command);
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("cannot start `{line}`: {error}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|error| panic!("cannot write stdin of `{line}`: {error}"));
    }
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_with_deadline(&mut child, &line);
    CommandOutput {
        command: line,
        status,
        stdout: stdout.recv().unwrap_or_default(),
        stderr: stderr.recv().unwrap_or_default(),
    }
}

/// Runs `ip args…` and returns its stdout.
///
/// # Panics
/// If `ip` fails: the lab's topology must be exactly as built.
#[track_caller]
pub fn ip(args: &[&str]) -> String {
    run("ip", args, None).expect_success()
}

/// A printable command line.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}

fn wait_with_deadline(child: &mut Child, line: &str) -> ExitStatus {
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if started.elapsed() < COMMAND_TIMEOUT => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{line}` did not finish within {COMMAND_TIMEOUT:?}; killed it");
            }
            Err(error) => panic!("cannot wait for `{line}`: {error}"),
        }
    }
}
