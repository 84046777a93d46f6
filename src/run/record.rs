//! `run.json`: the record of one run (who runs it, which ports and sockets it really uses, its
//! state and outcome). Written whole, through a temporary file and a rename, so a reader never
//! sees half a record. It holds no secrets and no environment.

use std::path::Path;

use anyhow::Context as _;
use fs_err as fs;
use serde::{Deserialize, Serialize};

use super::gvproxy::Mode;
use super::procs::ProcessId;
use crate::stage::alloc::SidecarKind;

pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    pub id: String,
    pub agent: String,
    /// The smolvm machine name.
    pub slug: String,
    pub runner: ProcessId,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub state: State,
    pub gvproxy_mode: Mode,
    pub components: Vec<Component>,
    pub sidecars: Vec<SidecarRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub timings: Timings,
}

/// Where the time went, in milliseconds; filled in as the run goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// bottle's own work from its start to the guest's command, without the waits for gvproxy
    /// and the sidecars and without `smolvm machine start`.
    pub bottle_ms: Option<f64>,
    /// Of that, before the run directory was taken: arguments, verifying the stage, preflight.
    #[serde(default)]
    pub checks_ms: Option<f64>,
    /// From starting the guard to gvproxy's VM socket.
    pub gvproxy_wait_ms: Option<f64>,
    /// After gvproxy was ready, until the sidecars bottle started listened.
    #[serde(default)]
    pub sidecar_wait_ms: Option<f64>,
    /// `smolvm machine start`, which bottle waits for before running the guest's command.
    #[serde(default)]
    pub smolvm_start_ms: Option<f64>,
    pub teardown_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    Stopping,
    /// Ended and torn down; see `outcome`.
    Ended,
    /// The runner died without tearing down; found and cleared by a later command.
    Crashed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// `guard`, `gvproxy`, `smolvm`, or a sidecar's name.
    pub name: String,
    pub process: ProcessId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarRecord {
    pub name: String,
    pub kind: SidecarKind,
    pub guest_port: u16,
    pub preferred_port: u16,
    /// The host loopback port really used: the preferred one unless it was taken.
    pub host_port: u16,
    /// The bridge's unix socket.
    pub socket: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// What `bottle run` exited with.
    pub exit_code: i32,
    /// Why the run ended, in words.
    pub reason: String,
    pub ended_at_ms: u64,
}

impl RunRecord {
    pub fn read(path: &Path) -> anyhow::Result<RunRecord> {
        let bytes = fs::read(path)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("`{}` is not a run record", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn component(&self, name: &str) -> Option<&ProcessId> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.process)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
