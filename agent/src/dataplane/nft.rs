//! nftables through the `nft` binary: a transaction's text goes to `nft -f -` on stdin, and
//! nft applies it as one atomic kernel transaction, or not at all.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kproxy_rules::nft::{Family, Inventory, TableRef, Transaction, names};
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};

/// The `nft` binary could not be run, or refused a transaction.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The binary could not be started or talked to.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// nft rejected the input; nothing of it was applied.
    #[error("nft rejected the transaction ({status}): {stderr}")]
    Rejected {
        /// nft's exit status.
        status: std::process::ExitStatus,
        /// What nft said, trimmed.
        stderr: String,
    },
}

/// The longest excerpt of nft's complaint kept in an error: at 10k services the echo of a
/// failing command can be large.
const MAX_STDERR: usize = 4000;

/// kproxy's own tables, the only ones it ever creates or deletes.
pub fn own_tables() -> [TableRef; 2] {
    [Family::Ip, Family::Ip6].map(|family| TableRef { family, name: names::TABLE.into() })
}

/// Runs transactions through an `nft` binary.
#[derive(Clone, Debug)]
pub struct NftCli {
    program: PathBuf,
}

impl NftCli {
    /// Uses the binary at `program` (looked up in `PATH` when it is a bare name).
    pub fn new(program: &Path) -> NftCli {
        NftCli { program: program.to_path_buf() }
    }

    /// `nft --version`, to fail early and clearly when nft is missing.
    pub async fn version(&self) -> Result<String, NftError> {
        let output =
            self.command().arg("--version").output().await.map_err(|source| self.spawn_error(source))?;
        if !output.status.success() {
            return Err(rejected(output.status, &output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Applies `tx` atomically with `nft -f -`.
    pub async fn apply(&self, tx: &Transaction<'_>) -> Result<(), NftError> {
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let written = write_script(&mut stdin, tx).await;
        drop(stdin);
        let output = child.wait_with_output().await.map_err(|source| self.spawn_error(source))?;
        if !output.status.success() {
            return Err(rejected(output.status, &output.stderr));
        }
        written.map_err(|source| self.spawn_error(source))
    }

    /// `nft -j list table`: the table as nft's JSON, or `None` when it does not exist.
    pub async fn list_table(&self, table: &TableRef) -> Result<Option<serde_json::Value>, NftError> {
        self.list(table, &["-j"]).await
    }

    /// The chains and sets of kproxy's own tables that exist, by name (`nft -j -t list
    /// table`, without elements).
    pub async fn inventory(&self) -> Result<Vec<Inventory>, NftError> {
        let mut inventory = Vec::new();
        for table in own_tables() {
            if let Some(json) = self.list(&table, &["-j", "-t"]).await? {
                inventory.extend(Inventory::from_nft_json(&table, &json));
            }
        }
        Ok(inventory)
    }

    async fn list(&self, table: &TableRef, options: &[&str]) -> Result<Option<serde_json::Value>, NftError> {
        let output = self
            .command()
            .args(options)
            .args(["list", "table", table.family.as_str(), &table.name])
            .output()
            .await
            .map_err(|source| self.spawn_error(source))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(rejected(output.status, &output.stderr));
        }
        serde_json::from_slice(&output.stdout).map(Some).map_err(|e| NftError::Rejected {
            status: output.status,
            stderr: format!("unreadable nft JSON: {e}"),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.kill_on_drop(true);
        command
    }

    fn spawn_error(&self, source: std::io::Error) -> NftError {
        NftError::Spawn { program: self.program.clone(), source }
    }
}

/// How much of a script is written to nft at a time.
const SCRIPT_CHUNK: usize = 1 << 20;

/// Writes `tx` as nft commands, a chunk at a time: the text of a full sync (13 MiB at 10k
/// Services) never exists whole.
async fn write_script(stdin: &mut ChildStdin, tx: &Transaction<'_>) -> std::io::Result<()> {
    let mut chunk = String::with_capacity(SCRIPT_CHUNK + SCRIPT_CHUNK / 4);
    for operation in tx.operations() {
        writeln!(chunk, "{operation}").expect("writing to a String cannot fail");
        if chunk.len() >= SCRIPT_CHUNK {
            stdin.write_all(chunk.as_bytes()).await?;
            chunk.clear();
        }
    }
    stdin.write_all(chunk.as_bytes()).await
}

fn rejected(status: std::process::ExitStatus, stderr: &[u8]) -> NftError {
    let mut text = String::from_utf8_lossy(stderr).trim().to_string();
    if text.len() > MAX_STDERR {
        let cut = (0..=MAX_STDERR).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str(" …");
    }
    NftError::Rejected { status, stderr: text }
}
