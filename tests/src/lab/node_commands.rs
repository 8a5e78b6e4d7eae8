//! Commands in the node namespace: `nft`, the agent's one-shot subcommands, and the
//! long-running agent itself.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{Lab, NODE_NAME, lock};
use crate::agent::{Agent, kproxy_binary};
use crate::command::{self, CommandOutput};

impl Lab {
    /// Runs `nft args…` in the node namespace.
    #[must_use]
    pub fn nft(&self, args: &[&str]) -> CommandOutput {
        let mut full = vec!["netns", "exec", &self.node, "nft"];
        full.extend_from_slice(args);
        command::run("ip", &full, None)
    }

    /// Feeds `script` to `nft -f -` in the node namespace.
    #[must_use]
    pub fn nft_script(&self, script: &str) -> CommandOutput {
        command::run("ip", &["netns", "exec", &self.node, "nft", "-f", "-"], Some(script))
    }

    /// Runs a one-shot `kproxy args…` (e.g. `cleanup`) in the node namespace and waits for it.
    #[must_use]
    pub fn kproxy(&self, args: &[&str]) -> CommandOutput {
        let binary = kproxy_binary();
        let mut full: Vec<OsString> =
            vec!["netns".into(), "exec".into(), self.node.clone().into(), binary.into()];
        full.extend(args.iter().map(OsString::from));
        command::run("ip", &full, None)
    }

    /// Starts `kproxy run --manifests <manifests> --hostname-override node1` in the node
    /// namespace; output goes to a log file in the scratch directory (its path is printed).
    ///
    /// # Panics
    /// If the binary is missing (build it: `cargo build -p kproxy`) or cannot be started.
    pub fn start_kproxy(&self, manifests: &Path) -> Agent {
        self.start_kproxy_with(manifests, &[])
    }

    /// Like [`Lab::start_kproxy`], with `extra` arguments after the standard ones.
    ///
    /// # Panics
    /// See [`Lab::start_kproxy`].
    pub fn start_kproxy_with(&self, manifests: &Path, extra: &[&str]) -> Agent {
        let mut arguments: Vec<OsString> = vec!["--manifests".into(), manifests.into()];
        arguments.extend(extra.iter().map(OsString::from));
        self.start_agent(arguments)
    }

    /// Starts `kproxy run --kubeconfig <kubeconfig> --hostname-override node1` in the node
    /// namespace, with `extra` arguments after the standard ones.
    ///
    /// # Panics
    /// See [`Lab::start_kproxy`].
    pub fn start_kproxy_with_kubeconfig(&self, kubeconfig: &Path, extra: &[&str]) -> Agent {
        let mut arguments: Vec<OsString> = vec!["--kubeconfig".into(), kubeconfig.into()];
        arguments.extend(extra.iter().map(OsString::from));
        self.start_agent(arguments)
    }

    /// Starts `kproxy run <source arguments> --hostname-override node1` in the node namespace.
    fn start_agent(&self, source: Vec<OsString>) -> Agent {
        let number = self.agents_started.fetch_add(1, Ordering::Relaxed) + 1;
        let mut arguments: Vec<OsString> = vec!["run".into()];
        arguments.extend(source);
        arguments.extend(["--hostname-override".into(), NODE_NAME.into()]);
        let log_path = self.scratch_path().join(format!("kproxy-{number}.log"));
        let agent = Agent::start_new(&self.node, arguments, log_path);
        lock(&self.shared.agents).push(agent.shared());
        agent
    }
}
