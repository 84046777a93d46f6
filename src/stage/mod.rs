//! Stages: the content-addressed output of `bottle gen`. `build` is the pure function from a
//! resolved spec to a stage's bytes; `store` puts stages on disk and finds them again; `verify`
//! and `diff` read them back. The runner reads stages, never manifests.

pub mod alloc;
pub mod archive;
pub mod diff;
pub mod gc;
pub mod id;
pub mod pins;
pub mod store;
pub mod verify;

use crate::render::{self, plan::Plan};
use crate::spec::ResolvedSpec;

pub use id::StageId;
pub use store::Store;

/// A stage in memory: its id and every file, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub id: StageId,
    pub spec: ResolvedSpec,
    pub plan: Plan,
    pub files: Vec<(&'static str, Vec<u8>)>,
}

impl Stage {
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_slice())
    }

    pub fn size(&self) -> u64 {
        self.files.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

/// Renders every file of the stage for `spec`. Pure and deterministic.
pub fn build(spec: &ResolvedSpec) -> Stage {
    let spec_json = render::spec_json::render(spec);
    let id = StageId::of_canonical_spec(&spec_json);
    let assignments = alloc::allocate(&id, spec);
    let mut files: Vec<(&'static str, Vec<u8>)> = vec![
        (render::EGRESS_TOML, render::egress::render(spec)),
        (render::GVPROXY_YAML, render::gvproxy::render(&assignments)),
        (
            render::SMOLFILE,
            render::smolfile::render(spec, &assignments),
        ),
        (render::SPEC_JSON, spec_json),
    ];
    if spec.egress.engine == crate::spec::resolved::EgressEngine::Pipelock {
        let policy = render::egress::policy(spec);
        files.push((render::PIPELOCK_YAML, render::pipelock::render(&policy)));
    }
    let plan = render::plan::plan(
        &id,
        &spec.agent,
        &assignments,
        files.iter().map(|(name, bytes)| (*name, bytes.as_slice())),
    );
    files.push((render::PLAN_JSON, render::plan::render(&plan)));
    files.sort_by_key(|(name, _)| *name);
    Stage {
        id,
        spec: spec.clone(),
        plan,
        files,
    }
}

/// The stages of every agent of a manifest, in agent-name order.
pub fn build_all(manifest: &crate::spec::Manifest) -> Result<Vec<Stage>, crate::spec::SpecError> {
    manifest
        .agent_names()
        .map(|name| Ok(build(&manifest.resolve(Some(name))?)))
        .collect()
}
