//! `egress.toml`: the policy of the built-in egress proxy. Default-deny; what is listed is all
//! the guest may reach, through the proxy.

use serde::{Deserialize, Serialize};

use crate::spec::cidr::AddressRange;
use crate::spec::host::HostPattern;
use crate::spec::ResolvedSpec;
use crate::STAGE_FORMAT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    pub format: u32,
    pub engine: Engine,
    /// Hosts the guest may reach. A pattern without a port allows 443 through CONNECT and 80 for
    /// plain HTTP; `*.example.com` matches names below `example.com`, not `example.com` itself.
    pub allow: Vec<HostPattern>,
    /// Ranges that allowed names may resolve to even though they are private, loopback,
    /// link-local or otherwise refused by default.
    pub allow_addresses: Vec<AddressRange>,
}

pub use crate::spec::resolved::EgressEngine as Engine;

pub fn policy(spec: &ResolvedSpec) -> EgressPolicy {
    EgressPolicy {
        format: STAGE_FORMAT,
        engine: spec.egress.engine,
        allow: spec.egress.allow.clone(),
        allow_addresses: spec.egress.allow_addresses.clone(),
    }
}

pub fn render(spec: &ResolvedSpec) -> Vec<u8> {
    super::to_toml(&policy(spec))
}

pub fn parse(bytes: &[u8]) -> Result<EgressPolicy, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    toml::from_str(text).map_err(|e| e.to_string())
}
