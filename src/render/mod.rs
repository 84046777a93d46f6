//! Pure renderers: each turns a resolved spec and its assignments into the bytes of one stage
//! file. No I/O, no clock, no environment: the same input gives the same bytes on any machine.
//! Changing what any of them writes requires bumping `STAGE_FORMAT`.

pub mod egress;
pub mod gvproxy;
pub mod pipelock;
pub mod plan;
pub mod smolfile;
pub mod spec_json;
mod yaml;

pub const SPEC_JSON: &str = "spec.json";
pub const PLAN_JSON: &str = "plan.json";
pub const SMOLFILE: &str = "smolfile.toml";
pub const GVPROXY_YAML: &str = "gvproxy.yaml";
pub const EGRESS_TOML: &str = "egress.toml";
/// Only in stages whose egress engine is pipelock.
pub const PIPELOCK_YAML: &str = "pipelock.yaml";

/// Every file a stage can have, sorted by name; which ones a stage has depends on its spec.
pub const STAGE_FILES: [&str; 6] = [
    EGRESS_TOML,
    GVPROXY_YAML,
    PIPELOCK_YAML,
    PLAN_JSON,
    SMOLFILE,
    SPEC_JSON,
];

/// Serialises a model to TOML. Values are escaped by the serializer, so no string can add a key.
fn to_toml<T: serde::Serialize>(value: &T) -> Vec<u8> {
    toml::to_string_pretty(value)
        .expect("rendered models always serialise to TOML")
        .into_bytes()
}
