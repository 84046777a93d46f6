//! bottle: runs AI coding agents in microVMs that reach only what the user allowed.
//!
//! The library is layered like the folders: `spec` (the user's manifest) feeds `stage` (identity,
//! assignments, the content-addressed store) which calls the pure renderers in `render`. `cli` is
//! glue: it parses arguments and calls one function of the layers below. See ARCHITECTURE.md.

pub mod cli;
pub mod error;
pub mod render;
pub mod run;
pub mod sidecar;
pub mod spec;
pub mod stage;

/// The stage format version. It is part of the id's derived key and of `spec.json`, so any change
/// to the bytes a renderer writes must bump it: one id must never name two different contents.
/// `cargo xtask bless` refuses to change golden bytes without a bump.
pub const STAGE_FORMAT: u32 = 3;
