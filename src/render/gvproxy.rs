//! `gvproxy.yaml`, for gvproxy 0.8.8+ (`-config`). The model mirrors gvproxy's own schema so the
//! tests can read a rendered file back strictly. What the stage must never contain is absent by
//! construction: no listeners, services, forwards or run-time paths (the runner passes those as
//! flags), and `nat` and `gatewayVirtualIPs` are always explicit, because gvproxy replaces empty
//! ones with a NAT of the last address to the host's loopback.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::stage::alloc::{Assignments, SUBNET_PREFIX};

pub const MTU: u32 = 1500;
pub const PROXY_ZONE: &str = "internal.";
pub const PROXY_RECORD: &str = "proxy";

/// The whole file: gvproxy's top level. Fields we never write are here so that reading a file
/// back fails loudly if one ever appears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "log-level", skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(rename = "log-file", skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
    #[serde(rename = "pid-file", skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwards: Option<Vec<serde_json::Value>>,
    pub stack: Stack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    pub mtu: u32,
    pub subnet: String,
    #[serde(rename = "gatewayIP")]
    pub gateway_ip: Ipv4Addr,
    #[serde(rename = "gatewayMacAddress")]
    pub gateway_mac_address: String,
    pub dns: Vec<Zone>,
    #[serde(
        rename = "dnsSearchDomains",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_search_domains: Vec<String>,
    /// INBOUND forwards (host -> guest); a stage never has any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forwards: BTreeMap<String, String>,
    pub nat: BTreeMap<Ipv4Addr, Ipv4Addr>,
    #[serde(rename = "gatewayVirtualIPs")]
    pub gateway_virtual_ips: Vec<Ipv4Addr>,
    #[serde(rename = "dhcpStaticLeases")]
    pub dhcp_static_leases: BTreeMap<Ipv4Addr, String>,
    #[serde(
        rename = "vpnKitUUIDMacAddresses",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub vpnkit_uuid_mac_addresses: BTreeMap<String, String>,
    #[serde(rename = "ec2MetadataAccess")]
    pub ec2_metadata_access: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub debug: bool,
    #[serde(
        rename = "capture-file",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capture_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// With a trailing dot; an empty name matches every query and answers NXDOMAIN.
    pub name: String,
    #[serde(default)]
    pub records: Vec<Record>,
    #[serde(rename = "defaultIP", default, skip_serializing_if = "Option::is_none")]
    pub default_ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// The DNS zones a stage serves: `proxy.internal` and a catch-all that answers nothing else.
/// The runner posts the same zones to a legacy gvproxy's API, so they are built in one place.
pub fn zones(assignments: &Assignments) -> Vec<Zone> {
    zones_for(assignments.proxy_ip)
}

/// The same zones for a given proxy address (a legacy gvproxy's fixed host address).
pub fn zones_for(proxy_ip: Ipv4Addr) -> Vec<Zone> {
    vec![
        Zone {
            name: PROXY_ZONE.to_owned(),
            records: vec![Record {
                name: PROXY_RECORD.to_owned(),
                ip: proxy_ip,
            }],
            default_ip: None,
        },
        Zone {
            name: String::new(),
            records: Vec::new(),
            default_ip: None,
        },
    ]
}

pub fn config(assignments: &Assignments) -> Config {
    let a = assignments;
    Config {
        stack: Stack {
            mtu: MTU,
            subnet: format!("{}/{SUBNET_PREFIX}", a.subnet),
            gateway_ip: a.gateway_ip,
            gateway_mac_address: a.gateway_mac.to_string(),
            dns: zones(a),
            nat: BTreeMap::from([(a.proxy_ip, Ipv4Addr::LOCALHOST)]),
            gateway_virtual_ips: vec![a.proxy_ip],
            dhcp_static_leases: BTreeMap::from([(a.guest_ip, a.guest_mac.to_string())]),
            ec2_metadata_access: false,
            dns_search_domains: Vec::new(),
            forwards: BTreeMap::new(),
            vpnkit_uuid_mac_addresses: BTreeMap::new(),
            debug: false,
            capture_file: None,
        },
        log_level: None,
        log_file: None,
        pid_file: None,
        listen: None,
        services: None,
        notification: None,
        interfaces: None,
        forwards: None,
    }
}

pub fn render(assignments: &Assignments) -> Vec<u8> {
    super::yaml::to_string(&config(assignments)).into_bytes()
}

/// Reads a rendered file back into the strict model.
pub fn parse(bytes: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    super::yaml::from_str(text)
}
