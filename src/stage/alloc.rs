//! Assignments: everything a stage fixes besides the rendered configs (subnet, addresses, MAC
//! addresses, ports), derived only from the id, so the same id means the same network anywhere.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::id::StageId;
use crate::spec::{validate, ResolvedSpec};

/// Where every stage subnet lives: 10.128.0.0/9, away from the 10.0/16-ish ranges home routers
/// and Docker favour and from Tailscale's 100.64/10.
pub const POOL_BASE: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
pub const POOL_SUBNETS: u32 = 1 << 15; // /24s in a /9
pub const SUBNET_PREFIX: u8 = 24;
pub const HOST_PORT_FIRST: u16 = 20000;
/// Below the ephemeral ranges of Linux (32768-60999) and macOS (49152-65535).
pub const HOST_PORT_LAST: u16 = 32767;
pub use crate::spec::validate::GATEWAY_PORTS;
pub const PROXY_NAME: &str = "proxy.internal";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarKind {
    Egress,
    Git,
    Supervise,
    /// A `[sidecars.NAME]` entry of the bottle.
    Custom,
}

impl SidecarKind {
    pub const BUILT_IN: [SidecarKind; 3] = [
        SidecarKind::Egress,
        SidecarKind::Git,
        SidecarKind::Supervise,
    ];

    /// The name of a built-in sidecar; custom ones carry their own.
    pub fn builtin_name(self) -> Option<&'static str> {
        match self {
            SidecarKind::Egress => Some("egress"),
            SidecarKind::Git => Some("git"),
            SidecarKind::Supervise => Some("supervise"),
            SidecarKind::Custom => None,
        }
    }

    /// The fixed port the guest dials on `proxy.internal` for a built-in sidecar.
    pub fn builtin_guest_port(self) -> Option<u16> {
        match self {
            SidecarKind::Egress => Some(validate::EGRESS_GUEST_PORT),
            SidecarKind::Git => Some(validate::GIT_GUEST_PORT),
            SidecarKind::Supervise => Some(validate::SUPERVISE_GUEST_PORT),
            SidecarKind::Custom => None,
        }
    }
}

/// The variable that tells the guest where a custom sidecar is: `docs-index` -> `DOCS_INDEX_URL`.
pub fn custom_url_env(name: &str) -> String {
    format!("{}_URL", name.to_ascii_uppercase().replace('-', "_"))
}

/// A sidecar as the spec asks for it, before ports are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarRequest {
    pub kind: SidecarKind,
    pub name: String,
    pub guest_port: u16,
    /// The variable carrying its URL in the guest; `None` for egress, which sets the proxy
    /// variables instead.
    pub url_env: Option<String>,
    pub guest_url: String,
    /// The host command, with `{port}` for the host port (supervise and custom sidecars).
    pub command: Option<Vec<String>>,
}

/// The active sidecars of a spec, built-in ones first, then custom ones by name.
pub fn sidecars_of(spec: &ResolvedSpec) -> Vec<SidecarRequest> {
    let http = |port: u16| format!("http://{PROXY_NAME}:{port}");
    let mut out = vec![SidecarRequest {
        kind: SidecarKind::Egress,
        name: "egress".into(),
        guest_port: validate::EGRESS_GUEST_PORT,
        url_env: None,
        guest_url: http(validate::EGRESS_GUEST_PORT),
        command: None,
    }];
    if spec.git {
        out.push(SidecarRequest {
            kind: SidecarKind::Git,
            name: "git".into(),
            guest_port: validate::GIT_GUEST_PORT,
            url_env: Some("GIT_GATE_URL".into()),
            guest_url: format!("git://{PROXY_NAME}:{}/", validate::GIT_GUEST_PORT),
            command: None,
        });
    }
    if let Some(supervise) = &spec.supervise {
        out.push(SidecarRequest {
            kind: SidecarKind::Supervise,
            name: "supervise".into(),
            guest_port: validate::SUPERVISE_GUEST_PORT,
            url_env: Some("MCP_SUPERVISE_URL".into()),
            guest_url: http(validate::SUPERVISE_GUEST_PORT),
            command: Some(supervise.command.clone()),
        });
    }
    for (name, custom) in &spec.sidecars {
        out.push(SidecarRequest {
            kind: SidecarKind::Custom,
            name: name.clone(),
            guest_port: custom.guest_port,
            url_env: Some(custom_url_env(name)),
            guest_url: http(custom.guest_port),
            command: Some(custom.command.clone()),
        });
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let bad = || format!("`{text}` is not a MAC address");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(mac))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignments {
    /// The smolvm machine name: `bottle-<agent>-<first 12 digits of the id>`.
    pub slug: String,
    pub subnet: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: MacAddr,
    pub guest_ip: Ipv4Addr,
    pub guest_mac: MacAddr,
    /// The address `proxy.internal` resolves to; gvproxy NATs it to its namespace's loopback.
    pub proxy_ip: Ipv4Addr,
    pub sidecars: Vec<SidecarAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarAssignment {
    pub request: SidecarRequest,
    /// Preferred only: when it is busy at run time the runner takes another and records it.
    pub host_port: u16,
}

/// A deterministic byte stream from the id, so that each assignment draws its own bytes.
fn id_stream(id: &StageId) -> blake3::OutputReader {
    let mut hasher = blake3::Hasher::new_derive_key("bottle stage assignments 1");
    hasher.update(id.as_bytes());
    hasher.finalize_xof()
}

pub fn allocate(id: &StageId, spec: &ResolvedSpec) -> Assignments {
    let mut stream = id_stream(id);
    let mut draw = [0u8; 16];
    stream.fill(&mut draw);

    let index = u32::from(u16::from_be_bytes([draw[0], draw[1]])) % POOL_SUBNETS;
    let subnet = Ipv4Addr::from(u32::from(POOL_BASE) | (index << 8));
    let host = |last: u8| Ipv4Addr::from(u32::from(subnet) | u32::from(last));
    let tail = [draw[2], draw[3], draw[4], draw[5], draw[6]];
    // 0x02 and 0x06: locally administered, unicast, and never equal to each other.
    let guest_mac = MacAddr([0x02, tail[0], tail[1], tail[2], tail[3], tail[4]]);
    let gateway_mac = MacAddr([0x06, tail[0], tail[1], tail[2], tail[3], tail[4]]);

    let span = u32::from(HOST_PORT_LAST - HOST_PORT_FIRST) + 1;
    let mut taken: Vec<u16> = Vec::new();
    let mut sidecars = Vec::new();
    for request in sidecars_of(spec) {
        // Built-in sidecars draw from fixed places of the first block, so that adding a custom
        // sidecar never moves them; custom ones draw further along the stream, in name order.
        let raw = match SidecarKind::BUILT_IN
            .iter()
            .position(|k| *k == request.kind)
        {
            Some(i) => [draw[8 + 2 * i], draw[9 + 2 * i]],
            None => {
                let mut two = [0u8; 2];
                stream.fill(&mut two);
                two
            }
        };
        let mut offset = u32::from(u16::from_be_bytes(raw)) % span;
        while taken.contains(&(HOST_PORT_FIRST + offset as u16)) {
            offset = (offset + 1) % span;
        }
        let host_port = HOST_PORT_FIRST + offset as u16;
        taken.push(host_port);
        sidecars.push(SidecarAssignment { request, host_port });
    }

    Assignments {
        slug: format!("bottle-{}-{}", spec.agent, &id.to_hex()[..12]),
        subnet,
        gateway_ip: host(1),
        gateway_mac,
        guest_ip: host(2),
        guest_mac,
        proxy_ip: host(254),
        sidecars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_guest_ports_avoid_the_gateway_and_each_other() {
        let ports: Vec<u16> = SidecarKind::BUILT_IN
            .iter()
            .filter_map(|k| k.builtin_guest_port())
            .collect();
        assert_eq!(ports.len(), 3);
        for port in &ports {
            assert!(!validate::GATEWAY_PORTS.contains(port), "{port}");
        }
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }

    #[test]
    fn custom_url_variables() {
        assert_eq!(custom_url_env("docs-index"), "DOCS_INDEX_URL");
    }

    #[test]
    fn mac_addresses_parse_back() {
        let mac: MacAddr = "02:ab:cd:ef:01:23".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:ef:01:23");
        assert!("02:ab:cd:ef:01".parse::<MacAddr>().is_err());
    }
}
