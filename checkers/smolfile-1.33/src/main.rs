//! Checks Smolfiles with smolvm's published parser, the `smolfile` crate, pinned to 1.33.0.
//! The program itself is shared by every checker: see ../../common/check.rs.

/// The exact `smolfile` version this checker is pinned to (see Cargo.toml).
const SMOLFILE_VERSION: &str = "1.33.0";

include!("../../common/check.rs");
