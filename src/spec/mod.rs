//! The spec: the user's `bottle.toml`, parsed strictly, checked, and resolved for one agent into
//! the canonical form a stage is hashed from. Pure: it reads text it is given and touches nothing.

pub mod cidr;
pub mod diagnostic;
pub mod host;
pub mod manifest;
pub mod resolved;
pub mod validate;

pub use diagnostic::SpecError;
pub use manifest::Manifest;
pub use resolved::ResolvedSpec;
