//! `plan.json`: every assignment of the stage and the digest of every other file. The runner
//! reads this (never the manifest) to know what to start and where.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::stage::alloc::{Assignments, MacAddr, SidecarKind, PROXY_NAME, SUBNET_PREFIX};
use crate::stage::id::StageId;
use crate::STAGE_FORMAT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format: u32,
    pub id: StageId,
    pub agent: String,
    /// The smolvm machine name.
    pub slug: String,
    pub network: Network,
    pub sidecars: Vec<Sidecar>,
    /// BLAKE3 (plain hash, 64 hex digits) of every other file of the stage.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub subnet: String,
    pub prefix: u8,
    pub gateway: Endpoint,
    pub guest: Endpoint,
    /// The guest's DNS server: gvproxy's gateway.
    pub dns: Ipv4Addr,
    pub proxy_name: String,
    pub proxy_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    pub name: String,
    pub kind: SidecarKind,
    pub guest_port: u16,
    pub guest_url: String,
    /// The guest variable that holds `guest_url` (egress sets the proxy variables instead).
    pub url_env: Option<String>,
    /// Preferred: the runner records the port it really used in the run's record.
    pub host_port: u16,
    /// The host command for supervise and custom sidecars; `{port}` is the host port.
    pub command: Option<Vec<String>>,
}

pub fn digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

pub fn plan<'a>(
    id: &StageId,
    agent: &str,
    assignments: &Assignments,
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Plan {
    let a = assignments;
    Plan {
        format: STAGE_FORMAT,
        id: *id,
        agent: agent.to_owned(),
        slug: a.slug.clone(),
        network: Network {
            subnet: format!("{}/{SUBNET_PREFIX}", a.subnet),
            prefix: SUBNET_PREFIX,
            gateway: Endpoint {
                ip: a.gateway_ip,
                mac: a.gateway_mac,
            },
            guest: Endpoint {
                ip: a.guest_ip,
                mac: a.guest_mac,
            },
            dns: a.gateway_ip,
            proxy_name: PROXY_NAME.to_owned(),
            proxy_ip: a.proxy_ip,
        },
        sidecars: a
            .sidecars
            .iter()
            .map(|s| Sidecar {
                name: s.request.name.clone(),
                kind: s.request.kind,
                guest_port: s.request.guest_port,
                guest_url: s.request.guest_url.clone(),
                url_env: s.request.url_env.clone(),
                host_port: s.host_port,
                command: s.request.command.clone(),
            })
            .collect(),
        files: files
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), digest(bytes)))
            .collect(),
    }
}

pub fn render(plan: &Plan) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(plan).expect("a plan always serialises");
    bytes.push(b'\n');
    bytes
}

pub fn parse(bytes: &[u8]) -> Result<Plan, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}
