//! Sidecars: the host-side services that are a bottle's only way out. With the runner, the only
//! layer that starts processes or opens sockets; it never reads manifests, only a stage's files.

pub mod egress;
pub mod git;
