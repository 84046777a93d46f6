//! `smolfile.toml`, for smolvm's own parser (the `smolfile` crate; checked against 1.9.2 and
//! 1.33.0). Only keys that smolvm 1.9.x knows are written, and never a networking key (`net`,
//! `net_backend`, `ports`): launched by hand, the machine has no network at all. The runner adds
//! the contained NIC on smolvm's command line.
//!
//! The whole command goes in `entrypoint`: at run time smolvm uses a machine's entrypoint and cmd
//! together, as they are, whenever either is set, and the image's own ENTRYPOINT and CMD only
//! when both are empty. Putting everything in one key leaves no room for a merge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::ResolvedSpec;
use crate::stage::alloc::{Assignments, SidecarKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smolfile {
    pub image: String,
    pub entrypoint: Vec<String>,
    /// `KEY=VALUE` strings: smolvm takes an array, not a table.
    pub env: Vec<String>,
    pub workdir: String,
    pub cpus: u8,
    /// MiB.
    pub memory: u32,
    /// Resolved by smolvm from its own environment when the machine starts; the value is never
    /// written anywhere by bottle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub from_env: String,
}

/// The variables bottle sets for the guest: where its sidecars are.
pub fn guest_env(spec: &ResolvedSpec, assignments: &Assignments) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for sidecar in &assignments.sidecars {
        let request = &sidecar.request;
        if request.kind == SidecarKind::Egress {
            for key in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
                env.insert(key.to_owned(), request.guest_url.clone());
            }
            for key in ["NO_PROXY", "no_proxy"] {
                env.insert(key.to_owned(), "localhost,127.0.0.1".to_owned());
            }
        }
        if let Some(key) = &request.url_env {
            env.insert(key.clone(), request.guest_url.clone());
        }
    }
    // The spec's checks refuse user keys that collide with these, so nothing is overwritten.
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

pub fn smolfile(spec: &ResolvedSpec, assignments: &Assignments) -> Smolfile {
    Smolfile {
        image: spec.image.clone(),
        entrypoint: spec.command.clone(),
        env: guest_env(spec, assignments)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        workdir: spec.workdir.clone(),
        cpus: spec.cpus,
        memory: spec.memory_mib,
        secrets: spec
            .secrets
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    SecretRef {
                        from_env: name.clone(),
                    },
                )
            })
            .collect(),
    }
}

pub fn render(spec: &ResolvedSpec, assignments: &Assignments) -> Vec<u8> {
    super::to_toml(&smolfile(spec, assignments))
}

pub fn parse(bytes: &[u8]) -> Result<Smolfile, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    toml::from_str(text).map_err(|e| e.to_string())
}
