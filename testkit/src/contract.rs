//! The documented smolvm command lines bottle may use (see shared/reference/smolvm.md), checked
//! strictly: every flag known, every value well formed, the external network complete, and the
//! Smolfile accepted by the `smolfile` crate of the smolvm fork (1.9.2) with no network keys.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `machine create` was given, as the stand-in stores it for the later commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub name: String,
    pub smolfile: PathBuf,
    pub socket: PathBuf,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub mac: [u8; 6],
    pub volume_host: PathBuf,
    pub volume_guest: String,
    pub entrypoint: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Secret name -> host variable it is read from.
    pub secrets: BTreeMap<String, String>,
    pub started: bool,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !name.ends_with('-')
        && !name.contains("--")
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC `{text}`")))
        .collect::<Result<_, _>>()?;
    let mac: [u8; 6] = parts.try_into().map_err(|_| format!("bad MAC `{text}`"))?;
    if mac[0] & 1 != 0 {
        return Err(format!("`{text}` is a multicast MAC"));
    }
    Ok(mac)
}

fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Checks `machine create` arguments (after `machine create`).
pub fn check_create(args: &[String]) -> Result<Machine, String> {
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    let mut net = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--net" if !net => net = true,
            flag @ ("--name" | "--smolfile" | "--net-backend" | "--net-unixstream"
            | "--net-address" | "--net-gateway" | "--net-dns" | "--net-mac"
            | "--volume") => {
                let value = it.next().ok_or(format!("{flag} needs a value"))?;
                if values.insert(flag, value.clone()).is_some() {
                    return Err(format!("{flag} given twice"));
                }
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let get = |flag: &str| {
        values.get(flag).cloned().ok_or(format!(
            "{flag} is required by the external network contract"
        ))
    };
    if !net {
        return Err("--net is missing: smolvm would start the VM without a NIC (TSI)".into());
    }
    if get("--net-backend")? != "virtio-net" {
        return Err("--net-backend must be virtio-net".into());
    }
    let name = get("--name")?;
    if !valid_name(&name) {
        return Err(format!("invalid machine name `{name}`"));
    }
    let socket = PathBuf::from(get("--net-unixstream")?);
    if !socket.is_absolute() {
        return Err("--net-unixstream must be an absolute path".into());
    }
    let (address, prefix) = get("--net-address")?
        .split_once('/')
        .and_then(|(ip, p)| Some((ip.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
        .filter(|(_, p)| (8..=30).contains(p))
        .ok_or("--net-address must be IPv4/prefix")?;
    let gateway: Ipv4Addr = get("--net-gateway")?
        .parse()
        .map_err(|_| "--net-gateway must be IPv4")?;
    let dns: Ipv4Addr = get("--net-dns")?
        .parse()
        .map_err(|_| "--net-dns must be IPv4")?;
    if !in_subnet(gateway, address, prefix) || !in_subnet(dns, address, prefix) {
        return Err("gateway and DNS must be in the guest's subnet".into());
    }
    let mac = parse_mac(&get("--net-mac")?)?;
    let smolfile_path = PathBuf::from(get("--smolfile")?);
    let text = std::fs::read_to_string(&smolfile_path).map_err(|e| {
        format!(
            "cannot read the Smolfile `{}`: {e}",
            smolfile_path.display()
        )
    })?;
    let smolfile = smolfile::parse(&text)
        .map_err(|e| format!("smolfile 1.9.2 rejects `{}`: {e}", smolfile_path.display()))?;
    if smolfile.net.is_some() || !smolfile.ports.is_empty() || smolfile.network.is_some() {
        return Err("the Smolfile configures networking itself (net, ports or [network])".into());
    }
    let workdir = smolfile
        .workdir
        .clone()
        .ok_or("the Smolfile has no workdir")?;
    let volume = get("--volume")?;
    let (host, guest) = volume
        .split_once(':')
        .ok_or("--volume must be HOST:GUEST")?;
    if !Path::new(host).is_absolute() || !Path::new(host).is_dir() {
        return Err(format!(
            "the volume's host side `{host}` is not an existing absolute directory"
        ));
    }
    if guest != workdir {
        return Err(format!(
            "the workspace is mounted at `{guest}`, not at the workdir `{workdir}`"
        ));
    }
    let env = smolfile
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let secrets = smolfile
        .secrets
        .iter()
        .map(|(name, r)| {
            r.from_env
                .clone()
                .map(|var| (name.clone(), var))
                .ok_or(format!("secret `{name}` is not from_env"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Machine {
        name,
        smolfile: smolfile_path,
        socket,
        address,
        prefix,
        gateway,
        dns,
        mac,
        volume_host: host.into(),
        volume_guest: guest.to_owned(),
        entrypoint: smolfile.entrypoint.clone(),
        env,
        secrets,
        started: false,
    })
}

/// `--name NAME` and nothing else but the given extra flags.
pub fn check_named(args: &[String], extra: &[&str]) -> Result<String, String> {
    let mut name = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--name" => name = Some(it.next().ok_or("--name needs a value")?.clone()),
            other if extra.contains(&other) => {}
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let name = name.ok_or("--name is required")?;
    if !valid_name(&name) {
        return Err(format!("invalid machine name `{name}`"));
    }
    Ok(name)
}

pub const CREATE_HELP: &str = "\
Create a machine

Usage: smolvm machine create [OPTIONS] --name <NAME>

Options:
      --name <NAME>               Machine name
  -s, --smolfile <FILE>           Smolfile
      --net                       Enable networking
      --net-backend <BACKEND>     tsi or virtio-net
      --net-unixstream <PATH>     Attach the virtio-net NIC to an external stream socket
      --net-address <CIDR>        The guest's address and prefix
      --net-gateway <IP>          The guest's default gateway
      --net-dns <IP>              The guest's DNS server
      --net-mac <MAC>             The NIC's MAC address
  -v, --volume <HOST:GUEST>       Mount a host directory
  -h, --help                      Print help
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_smolvms_rules() {
        assert!(valid_name("bottle-shell-9d42c218f1d9"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a--b"));
        assert!(!valid_name("a-"));
    }

    #[test]
    fn create_without_the_external_network_is_refused() {
        let args: Vec<String> = ["--name", "m", "--smolfile", "/nonexistent", "--net"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = check_create(&args).unwrap_err();
        assert!(err.contains("--net-backend"), "{err}");
    }
}
