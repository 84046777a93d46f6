//! The built-in egress proxy: an allow-list HTTP/HTTPS forward proxy (CONNECT and absolute-form
//! HTTP) with an SSRF guard and an audit log. `decision` and `address` are pure; `resolve`,
//! `tunnel`, `sys`, `forward` and `server` do the I/O; `audit` owns the log format. `bottle proxy` and the runner
//! both start it through [`serve`].

pub mod address;
pub mod audit;
pub mod decision;
mod forward;
pub mod resolve;
pub mod server;
pub mod sys;
pub mod tunnel;

pub use audit::AuditLog;
pub use resolve::{Override, Resolver};
pub use server::{serve, Limits, Options};

use anyhow::Context as _;

use crate::render::{self, egress::EgressPolicy};
use crate::stage::Stage;

/// The policy of a stage that has been verified: its `egress.toml`, parsed.
pub fn policy_of(stage: &Stage) -> anyhow::Result<EgressPolicy> {
    let bytes = stage
        .file(render::EGRESS_TOML)
        .with_context(|| format!("stage {} has no {}", stage.id, render::EGRESS_TOML))?;
    render::egress::parse(bytes).map_err(|e| {
        anyhow::anyhow!(
            "failed to read {} of stage {}: {e}",
            render::EGRESS_TOML,
            stage.id
        )
    })
}
