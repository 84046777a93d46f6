//! `spec.json`: the canonical encoding of the resolved spec, byte for byte the id's hash input,
//! so that a stage explains itself.

use crate::spec::ResolvedSpec;

pub fn render(spec: &ResolvedSpec) -> Vec<u8> {
    spec.canonical_bytes()
}
