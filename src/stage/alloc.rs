//! Assignments: everything a stage fixes besides the rendered configs (subnet, addresses, MAC
//! addresses, ports), derived only from the id, so the same id means the same network anywhere.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::id::StageId;
use crate::spec::ResolvedSpec;

/// Where every stage subnet lives: 10.128.0.0/9, away from the 10.0/16-ish ranges home routers
/// and Docker favour and from Tailscale's 100.64/10.
pub const POOL_BASE: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
pub const POOL_SUBNETS: u32 = 1 << 15; // /24s in a /9
pub const SUBNET_PREFIX: u8 = 24;
pub const HOST_PORT_FIRST: u16 = 20000;
/// Below the ephemeral ranges of Linux (32768-60999) and macOS (49152-65535).
pub const HOST_PORT_LAST: u16 = 32767;
/// Ports the gvproxy gateway serves itself (DNS, DHCP, its HTTP API): never a sidecar's.
pub const GATEWAY_PORTS: [u16; 3] = [53, 67, 80];
pub const PROXY_NAME: &str = "proxy.internal";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarKind {
    Egress,
    Git,
    Supervise,
}

impl SidecarKind {
    pub const ALL: [SidecarKind; 3] = [
        SidecarKind::Egress,
        SidecarKind::Git,
        SidecarKind::Supervise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SidecarKind::Egress => "egress",
            SidecarKind::Git => "git",
            SidecarKind::Supervise => "supervise",
        }
    }

    /// The port the guest dials on `proxy.internal`; fixed, so guest images can rely on it.
    pub fn guest_port(self) -> u16 {
        match self {
            SidecarKind::Egress => 3128,
            SidecarKind::Git => 9418,
            SidecarKind::Supervise => 8765,
        }
    }

    /// The URL the guest is given for this sidecar.
    pub fn guest_url(self) -> String {
        let port = self.guest_port();
        match self {
            SidecarKind::Egress | SidecarKind::Supervise => format!("http://{PROXY_NAME}:{port}"),
            SidecarKind::Git => format!("git://{PROXY_NAME}:{port}/"),
        }
    }

    pub fn is_active(self, spec: &ResolvedSpec) -> bool {
        match self {
            SidecarKind::Egress => true,
            SidecarKind::Git => spec.git,
            SidecarKind::Supervise => spec.supervise.is_some(),
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarAssignment {
    pub kind: SidecarKind,
    pub guest_port: u16,
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
    for (i, kind) in SidecarKind::ALL.into_iter().enumerate() {
        if !kind.is_active(spec) {
            continue;
        }
        let raw = u32::from(u16::from_be_bytes([draw[8 + 2 * i], draw[9 + 2 * i]]));
        let mut offset = raw % span;
        while taken.contains(&(HOST_PORT_FIRST + offset as u16)) {
            offset = (offset + 1) % span;
        }
        let host_port = HOST_PORT_FIRST + offset as u16;
        taken.push(host_port);
        sidecars.push(SidecarAssignment {
            kind,
            guest_port: kind.guest_port(),
            host_port,
        });
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
    fn sidecar_guest_ports_avoid_the_gateway() {
        for kind in SidecarKind::ALL {
            assert!(!GATEWAY_PORTS.contains(&kind.guest_port()), "{kind:?}");
        }
        let mut ports: Vec<u16> = SidecarKind::ALL.iter().map(|k| k.guest_port()).collect();
        ports.dedup();
        assert_eq!(ports.len(), 3);
    }

    #[test]
    fn mac_addresses_parse_back() {
        let mac: MacAddr = "02:ab:cd:ef:01:23".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:ef:01:23");
        assert!("02:ab:cd:ef:01".parse::<MacAddr>().is_err());
    }
}
