//! The resolved spec: one agent merged with its bottle, defaults filled in, units normalised,
//! collections sorted. Its canonical encoding is `spec.json` and the exact input of the stage id.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::cidr::AddressRange;
use super::host::HostPattern;
use super::validate::{self, Invalid};
use crate::STAGE_FORMAT;

pub const DEFAULT_CPUS: u8 = 2;
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
pub const DEFAULT_WORKDIR: &str = "/workspace";

/// Every field is required and unknown fields are refused, so a `spec.json` has exactly one
/// reading. Field order here is the order of the canonical encoding: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedSpec {
    pub format: u32,
    pub agent: String,
    pub image: String,
    pub command: Vec<String>,
    pub workdir: String,
    pub cpus: u8,
    pub memory_mib: u32,
    /// Plain variables for the guest, the agent's over the bottle's.
    pub env: BTreeMap<String, String>,
    /// Names of host variables handed to the guest at run time; their values never enter a stage.
    pub secrets: BTreeSet<String>,
    pub egress: Egress,
    pub git: bool,
    pub supervise: Option<Supervise>,
    /// Further host services the guest may reach, by name.
    pub sidecars: BTreeMap<String, CustomSidecar>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    pub engine: EgressEngine,
    /// Sorted and without duplicates.
    pub allow: Vec<HostPattern>,
    /// Address ranges that allowed names may resolve to although they are private or local,
    /// opened on purpose (a company registry). Sorted and without duplicates.
    pub allow_addresses: Vec<AddressRange>,
}

/// Which proxy enforces the egress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressEngine {
    /// bottle's own proxy: exact ports, `*.example.com` never matches `example.com`.
    Builtin,
    /// An installed pipelock (pinned version), with a rendered `pipelock.yaml`. It cannot
    /// restrict ports: every allowed host is reachable on every port.
    Pipelock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supervise {
    /// A host command; `{port}` is replaced by the host port the runner picks.
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSidecar {
    /// A host command; `{port}` is replaced by the host port the runner picks.
    pub command: Vec<String>,
    /// The port the guest dials on `proxy.internal`.
    pub guest_port: u16,
}

pub const PORT_PLACEHOLDER: &str = "{port}";

impl ResolvedSpec {
    /// The canonical encoding: pretty JSON with fields in declaration order and maps sorted,
    /// ending in a newline. Deterministic because every map is a `BTreeMap`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a resolved spec always serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Reads `spec.json` back. Fails closed: the bytes must be exactly the canonical encoding of
    /// a spec that passes every check a manifest would have to pass.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<ResolvedSpec, Invalid> {
        let spec: ResolvedSpec = serde_json::from_slice(bytes)
            .map_err(|e| Invalid::new(format!("not a valid spec: {e}")))?;
        if spec.format != STAGE_FORMAT {
            return Err(Invalid::new(format!(
                "written by stage format {}, this bottle reads format {STAGE_FORMAT}",
                spec.format
            ))
            .help("regenerate the stage from its manifest with `bottle gen`"));
        }
        spec.check()?;
        if spec.canonical_bytes() != bytes {
            return Err(Invalid::new(
                "not in canonical form (re-encoding it changes its bytes)",
            ));
        }
        Ok(spec)
    }

    /// The value checks of the manifest, for a spec that did not come from one.
    pub fn check(&self) -> Result<(), Invalid> {
        validate::name(&self.agent)?;
        validate::image(&self.image)?;
        validate::command(&self.command)?;
        validate::workdir(&self.workdir)?;
        validate::cpus(i64::from(self.cpus))?;
        validate::memory_mib(i64::from(self.memory_mib))?;
        for (key, value) in &self.env {
            validate::user_env_key(key)?;
            validate::no_nul("an environment value", value)?;
        }
        for secret in &self.secrets {
            validate::user_env_key(secret)?;
            if self.env.contains_key(secret) {
                return Err(Invalid::new(format!(
                    "`{secret}` is both a secret and a variable"
                )));
            }
        }
        if !self.egress.allow.windows(2).all(|w| w[0] < w[1]) {
            return Err(Invalid::new(
                "egress.allow is not sorted and free of duplicates",
            ));
        }
        if self.egress.engine == EgressEngine::Pipelock {
            validate::pipelock_patterns(&self.egress.allow)?;
        }
        if !self.egress.allow_addresses.windows(2).all(|w| w[0] < w[1]) {
            return Err(Invalid::new(
                "egress.allow_addresses is not sorted and free of duplicates",
            ));
        }
        if let Some(supervise) = &self.supervise {
            validate::supervise_command(&supervise.command)?;
        }
        let mut ports = BTreeSet::new();
        for (name, sidecar) in &self.sidecars {
            validate::sidecar_name(name)?;
            validate::supervise_command(&sidecar.command)?;
            if !ports.insert(validate::guest_port(i64::from(sidecar.guest_port))?) {
                return Err(Invalid::new(format!(
                    "two sidecars use guest port {}",
                    sidecar.guest_port
                )));
            }
            let url_env = crate::stage::alloc::custom_url_env(name);
            if self.env.contains_key(&url_env) || self.secrets.contains(&url_env) {
                return Err(Invalid::new(format!(
                    "`{url_env}` is both a variable and sidecar `{name}`'s URL"
                )));
            }
        }
        Ok(())
    }
}
