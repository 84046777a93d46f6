//! gvproxy: the only module that names gvproxy's flags and API paths. It reads the installed
//! version, builds the command line for legacy (before 0.8.8) or config mode, and adds a stage's
//! DNS zones through a legacy gvproxy's API socket. It never starts gvproxy: the guard does,
//! inside its namespaces.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::render::gvproxy::{self as render, Zone};
use crate::render::plan::Plan;
use crate::stage::alloc::MacAddr;

/// The first release that reads `-config FILE`.
pub const CONFIG_MODE_SINCE: Version = Version(0, 8, 8);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Reads `gvproxy version v0.8.1` (the output of `gvproxy -version`).
pub fn parse_version(output: &str) -> Option<Version> {
    let word = output
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    let core = word[1..].split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some(Version(
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

pub fn version_args() -> [&'static str; 1] {
    ["-version"]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// 0.8.8+: the stage's `gvproxy.yaml`.
    Config,
    /// Older: gvproxy's fixed 192.168.127.0/24, zones added through the API.
    Legacy,
}

impl Mode {
    pub fn for_version(version: Version) -> Mode {
        if version >= CONFIG_MODE_SINCE {
            Mode::Config
        } else {
            Mode::Legacy
        }
    }
}

/// The network the guest is configured with: the stage's, or gvproxy's fixed one in legacy mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestNetwork {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub mac: MacAddr,
    pub proxy_ip: Ipv4Addr,
}

/// gvproxy's hard-wired layout before 0.8.8: subnet 192.168.127.0/24, gateway .1, host .254.
pub const LEGACY_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
pub const LEGACY_GUEST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
pub const LEGACY_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
pub const LEGACY_PREFIX: u8 = 24;

pub fn guest_network(plan: &Plan, mode: Mode) -> GuestNetwork {
    let net = &plan.network;
    match mode {
        Mode::Config => GuestNetwork {
            address: net.guest.ip,
            prefix: net.prefix,
            gateway: net.gateway.ip,
            dns: net.dns,
            mac: net.guest.mac,
            proxy_ip: net.proxy_ip,
        },
        Mode::Legacy => GuestNetwork {
            address: LEGACY_GUEST,
            prefix: LEGACY_PREFIX,
            gateway: LEGACY_GATEWAY,
            dns: LEGACY_GATEWAY,
            mac: net.guest.mac,
            proxy_ip: LEGACY_HOST,
        },
    }
}

/// The zones a legacy gvproxy gets through its API: the stage's, pointed at its fixed host IP.
pub fn legacy_zones() -> Vec<Zone> {
    render::zones_for(LEGACY_HOST)
}

/// Paths gvproxy is given at run time; all inside the one directory it may write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimePaths<'a> {
    pub vm_socket: &'a Path,
    pub api_socket: &'a Path,
    pub pid_file: &'a Path,
}

pub fn args(mode: Mode, stage_config: &Path, paths: &RuntimePaths<'_>) -> Vec<String> {
    let unix = |p: &Path| format!("unix://{}", p.display());
    let mut args = Vec::new();
    if mode == Mode::Config {
        args.extend(["-config".to_owned(), stage_config.display().to_string()]);
    }
    args.extend(["-listen-qemu".to_owned(), unix(paths.vm_socket)]);
    if mode == Mode::Legacy {
        // The API is needed to add the zones; it listens only on a socket in the run directory.
        args.extend(["-listen".to_owned(), unix(paths.api_socket)]);
        // Without this, 0.8.1 forwards host 127.0.0.1:2222 to the guest's SSH.
        args.extend(["-ssh-port".to_owned(), "-1".to_owned()]);
    }
    args.extend(["-pid-file".to_owned(), paths.pid_file.display().to_string()]);
    args
}

/// Adds each zone with `POST /services/dns/add`, then reads `GET /services/dns/all` back and
/// fails unless every zone is there: a gvproxy that silently ignored a zone would answer names
/// the stage never allowed.
pub fn add_zones(api_socket: &Path, zones: &[Zone]) -> anyhow::Result<()> {
    for zone in zones {
        let body = serde_json::to_vec(zone)?;
        let (status, reply) = http(api_socket, "POST", "/services/dns/add", &body)?;
        if status != 200 {
            bail!(
                "gvproxy refused the DNS zone `{}`: HTTP {status}: {}",
                zone.name,
                String::from_utf8_lossy(&reply).trim()
            );
        }
    }
    let (status, reply) = http(api_socket, "GET", "/services/dns/all", &[])?;
    #[derive(Deserialize)]
    struct Listed {
        #[serde(rename = "Name")]
        name: String,
    }
    let listed: Vec<Listed> = if status == 200 {
        serde_json::from_slice(&reply).context("gvproxy's zone list is not JSON")?
    } else {
        bail!("gvproxy did not list its DNS zones: HTTP {status}");
    };
    for zone in zones {
        if !listed.iter().any(|l| l.name == zone.name) {
            bail!("gvproxy did not keep the DNS zone `{}`", zone.name);
        }
    }
    Ok(())
}

/// One HTTP/1.1 request on a unix socket, `Connection: close`, body read to the end.
fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let context = || format!("gvproxy's API socket `{}`", socket.display());
    let mut stream = UnixStream::connect(socket).with_context(context)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    write!(
        request,
        "{method} {path} HTTP/1.1\r\nHost: gvproxy\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    request.extend_from_slice(body);
    stream.write_all(&request).with_context(context)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).with_context(context)?;
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("gvproxy's API sent no HTTP header")?;
    let head = String::from_utf8_lossy(&reply[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("gvproxy's API sent no HTTP status")?;
    let mut body = reply[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || size > data.len() {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_gvproxys_own_words() {
        assert_eq!(
            parse_version("gvproxy version v0.8.1\n"),
            Some(Version(0, 8, 1))
        );
        assert_eq!(
            parse_version("gvproxy version v0.8.9-dev"),
            Some(Version(0, 8, 9))
        );
        assert_eq!(parse_version("gvproxy version unknown"), None);
    }

    #[test]
    fn the_mode_switches_at_0_8_8() {
        assert_eq!(Mode::for_version(Version(0, 8, 1)), Mode::Legacy);
        assert_eq!(Mode::for_version(Version(0, 8, 7)), Mode::Legacy);
        assert_eq!(Mode::for_version(Version(0, 8, 8)), Mode::Config);
        assert_eq!(Mode::for_version(Version(1, 0, 0)), Mode::Config);
    }

    #[test]
    fn legacy_mode_disables_ssh_and_config_mode_has_no_api() {
        let paths = RuntimePaths {
            vm_socket: Path::new("/r/gv/vm.sock"),
            api_socket: Path::new("/r/gv/api.sock"),
            pid_file: Path::new("/r/gv/gvproxy.pid"),
        };
        let legacy = args(Mode::Legacy, Path::new("/s/gvproxy.yaml"), &paths);
        assert!(legacy.windows(2).any(|w| w == ["-ssh-port", "-1"]));
        assert!(!legacy.contains(&"-config".to_owned()));
        let config = args(Mode::Config, Path::new("/s/gvproxy.yaml"), &paths);
        assert_eq!(config[..2], ["-config", "/s/gvproxy.yaml"]);
        assert!(!config.contains(&"-listen".to_owned()));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
