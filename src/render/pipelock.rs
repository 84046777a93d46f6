//! `pipelock.yaml`: the egress policy written for pipelock, the proxy a spec gets with
//! `engine = "pipelock"`. The runner starts it as
//! `pipelock run -c <stage>/pipelock.yaml -l 127.0.0.1:PORT`; the listen address is a run-time
//! value, so it is a flag and never part of the file.
//!
//! Pinned to pipelock **v2.3.0**, commit `7a3b7de4a5552b4e756eb930256468b7cbd616b1`
//! (github.com/luckyPipewrench/pipelock, tag `v2.3.0`, released 2026-04-24; the Docker image is
//! `ghcr.io/luckypipewrench/pipelock:2.3.0`). Every fact below was read at that commit:
//!
//! - `internal/config/load.go`: the file is decoded with yaml.v3 `KnownFields(true)`, so an
//!   unknown key anywhere is a start-up error, and a second YAML document is refused. Omitted
//!   fields take defaults (`internal/config/normalize.go`, `ApplyDefaults`).
//! - `internal/config/schema.go`: the yaml tags modelled here (`version`, `mode`, `enforce`,
//!   `api_allowlist`, `fetch_proxy.monitoring.blocklist`, `forward_proxy.{enabled,
//!   sni_verification}`, `logging.*`, `internal`, `trusted_domains`, `ssrf.ip_allowlist`).
//! - `internal/scanner/scanner.go`: `api_allowlist` is enforced only in `strict` mode (`New`),
//!   and an empty list allows everything (`checkAllowlist`); `internal/config/validate.go`
//!   (`validateMode`) refuses strict mode with an empty list. Host matching (`MatchDomain`) is
//!   case-insensitive, exact for names and IP literals, and `*.example.com` matches the apex
//!   `example.com` as well as every name below it (also stated in `docs/configuration.md`).
//!   The blocklist is checked right after the allow-list with the same matcher.
//! - SSRF (`checkSSRF`, `internal/scanner/core.go`): on whenever `internal` is non-empty; the
//!   name is resolved (a failed lookup blocks) and the request is blocked if *any* address lies
//!   in `internal` (plus a built-in floor: 0/8, 127/8, 10/8, 172.16/12, 192.168/16, 169.254/16)
//!   unless it lies in `ssrf.ip_allowlist`. `trusted_domains` exempts names from this check
//!   altogether; bottle never uses it. `validate.go` (`validateSSRF`) wants each
//!   `ip_allowlist` entry as a CIDR with host bits clear and refuses `/0`, which is exactly
//!   [`AddressRange`]'s canonical form. IP literals are checked against the same ranges
//!   before any lookup, and the dialer re-checks the address it connects to.
//! - `internal/proxy/forward.go`: CONNECT and absolute-URI requests go through the same scan
//!   only when `forward_proxy.enabled` is true; `/fetch?url=` on the same listener always does.
//! - `internal/cli/runtime/run.go` and `server.go`: `run` takes `-c/--config`, `-l/--listen`
//!   (overrides `fetch_proxy.listen`, default `127.0.0.1:8888`) and `-m/--mode` (applied only
//!   when given, so the file's `mode` stands when it is absent).
//! - `internal/audit/logger.go`: with `logging.format: json` and `output: stdout`, one JSON
//!   object per decision on stdout (`"event":"allowed"`, `"blocked"`, `"tunnel_open"`, ...).
//!
//! What pipelock cannot express, and the reading chosen:
//!
//! - **Ports.** Nothing in pipelock's schema restricts ports: an allowed host is reachable on
//!   every port, through CONNECT and plain HTTP alike. A pattern's port is therefore dropped
//!   and `a.example.com` and `a.example.com:8443` become one entry. No stricter mapping exists
//!   (leaving the host out would refuse what the policy allows and still not restrict the ports
//!   of the hosts that stay), so this is a documented widening of the policy.
//! - **Wildcards and their apex.** bottle's `*.example.com` does not match `example.com`;
//!   pipelock's does. The stricter reading is kept by also putting the apex on the blocklist,
//!   unless the policy allows the apex by another pattern.
//! - **An empty allow-list.** Strict mode refuses one, and an empty list would allow
//!   everything anyway. The list then holds [`DENY_ALL`], a name under the reserved `.invalid`
//!   top-level domain that never resolves and that the blocklist also refuses.
//! - **Refused ranges.** `internal` holds every range the built-in proxy refuses. NAT64
//!   addresses (`64:ff9b::/96`) cannot be judged by the IPv4 address they carry, so the whole
//!   prefix is refused.
//!
//! Everything else (DLP, entropy checks, response scanning, the per-host rate limit, tunnel
//! timeouts) is left at pipelock's defaults: those only ever refuse more.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::render::egress::EgressPolicy;
use crate::spec::cidr::AddressRange;
use crate::spec::host::{HostMatch, HostPattern};

pub const PIPELOCK_VERSION: &str = "2.3.0";
pub const PIPELOCK_COMMIT: &str = "7a3b7de4a5552b4e756eb930256468b7cbd616b1";

/// The only allow-list entry of a policy that allows nothing: reserved, never resolvable, and
/// blocklisted as well.
pub const DENY_ALL: &str = "deny-all.bottle.invalid";

/// Ranges refused unless `allow_addresses` opens them: pipelock's own defaults and the rest of
/// what the built-in proxy refuses (special-use, documentation, benchmarking, reserved, NAT64).
const INTERNAL: [&str; 25] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "::1/128",
    "64:ff9b::/96",
    "100::/64",
    "2001:2::/48",
    "2001:db8::/32",
    "3fff::/20",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// The top level, as far as bottle writes it. Field order is the order in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Schema version; pipelock knows only 1.
    pub version: u32,
    pub mode: Mode,
    /// `false` would turn every block into a logged warning.
    pub enforce: bool,
    /// Host names (`*.example.com` matches the apex too) and IP literals, without ports or
    /// brackets. Enforced in strict mode only.
    pub api_allowlist: Vec<String>,
    pub fetch_proxy: FetchProxy,
    pub forward_proxy: ForwardProxy,
    pub logging: Logging,
    /// Refused address ranges (the SSRF check); an explicit empty list would switch it off.
    pub internal: Vec<AddressRange>,
    /// Names exempt from the SSRF check. Always empty: bottle opens addresses, not names.
    pub trusted_domains: Vec<String>,
    pub ssrf: Ssrf,
}

/// pipelock also knows `balanced` and `audit`; neither enforces `api_allowlist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Strict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchProxy {
    pub monitoring: Monitoring,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Same matcher as `api_allowlist`; checked after it.
    pub blocklist: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardProxy {
    /// CONNECT tunnels and absolute-URI requests: what `HTTPS_PROXY`/`HTTP_PROXY` clients use.
    pub enabled: bool,
    /// A tunnel's TLS ClientHello must name the host it was opened to.
    pub sni_verification: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub format: LogFormat,
    pub output: LogOutput,
    pub include_allowed: bool,
    pub include_blocked: bool,
}

/// pipelock also knows `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
}

/// pipelock also knows `file` and `both`, which need a path in `logging.file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOutput {
    Stdout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssrf {
    /// Ranges exempt from `internal`: the policy's `allow_addresses`.
    pub ip_allowlist: Vec<AddressRange>,
}

pub fn config(policy: &EgressPolicy) -> Config {
    let mut allow: BTreeSet<String> = policy.allow.iter().map(|p| entry(&p.host)).collect();
    let mut block: BTreeSet<String> = policy
        .allow
        .iter()
        .filter_map(|p| match &p.host {
            HostMatch::Subdomains(apex) if !allowed_by_name(policy, apex) => Some(apex.clone()),
            _ => None,
        })
        .collect();
    if allow.is_empty() {
        allow.insert(DENY_ALL.to_owned());
        block.insert(DENY_ALL.to_owned());
    }
    Config {
        version: 1,
        mode: Mode::Strict,
        enforce: true,
        api_allowlist: allow.into_iter().collect(),
        fetch_proxy: FetchProxy {
            monitoring: Monitoring {
                blocklist: block.into_iter().collect(),
            },
        },
        forward_proxy: ForwardProxy {
            enabled: true,
            sni_verification: true,
        },
        logging: Logging {
            format: LogFormat::Json,
            output: LogOutput::Stdout,
            include_allowed: true,
            include_blocked: true,
        },
        internal: INTERNAL
            .iter()
            .map(|r| r.parse().expect("INTERNAL holds canonical ranges"))
            .collect(),
        trusted_domains: Vec::new(),
        ssrf: Ssrf {
            ip_allowlist: policy.allow_addresses.clone(),
        },
    }
}

/// An allow-list entry as pipelock matches it: no port, IPv6 without brackets.
fn entry(host: &HostMatch) -> String {
    match host {
        HostMatch::Exact(name) => name.clone(),
        HostMatch::Subdomains(suffix) => format!("*.{suffix}"),
        HostMatch::Ipv4(ip) => ip.to_string(),
        HostMatch::Ipv6(ip) => ip.to_string(),
    }
}

/// Does any pattern of the policy allow `name`, on some port?
fn allowed_by_name(policy: &EgressPolicy, name: &str) -> bool {
    policy.allow.iter().any(|p| {
        let any_port = HostPattern {
            host: p.host.clone(),
            port: None,
        };
        any_port.matches(name, 443, 443)
    })
}

pub fn render(policy: &EgressPolicy) -> Vec<u8> {
    super::yaml::to_string(&config(policy)).into_bytes()
}

/// Reads a rendered file back into the strict model.
pub fn parse(bytes: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    super::yaml::from_str(text)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::render::egress::Engine;
    use crate::STAGE_FORMAT;

    fn policy(allow: &[&str], allow_addresses: &[&str]) -> EgressPolicy {
        let mut allow: Vec<HostPattern> = allow.iter().map(|p| p.parse().unwrap()).collect();
        allow.sort();
        allow.dedup();
        EgressPolicy {
            format: STAGE_FORMAT,
            engine: Engine::Builtin,
            allow,
            allow_addresses: allow_addresses.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn example() -> EgressPolicy {
        policy(
            &[
                "api.anthropic.com",
                "*.githubusercontent.com",
                "*.example.org",
                "example.org:8443",
                "registry.npmjs.org:443",
                "registry.npmjs.org",
                "*.deep.corp.example",
                "*.corp.example",
                "10.1.2.3:5000",
                "[2001:db8::7]",
            ],
            &["10.0.0.0/8", "fd00:1::/64"],
        )
    }

    /// pipelock's host matcher, as described in `internal/scanner/scanner.go` (`MatchDomain`).
    fn pipelock_matches(host: &str, pattern: &str) -> bool {
        if host.parse::<IpAddr>().is_ok() {
            return host == pattern;
        }
        match pattern.strip_prefix("*.") {
            Some(base) => host == base || host.ends_with(&format!(".{base}")),
            None => host == pattern,
        }
    }

    /// Would pipelock, loaded with `config`, let a request for `host` past its name checks?
    fn pipelock_admits(config: &Config, host: &str) -> bool {
        config
            .api_allowlist
            .iter()
            .any(|p| pipelock_matches(host, p))
            && !config
                .fetch_proxy
                .monitoring
                .blocklist
                .iter()
                .any(|p| pipelock_matches(host, p))
    }

    #[test]
    fn reads_back_what_it_renders() {
        let p = example();
        let bytes = render(&p);
        assert_eq!(parse(&bytes).unwrap(), config(&p));
        assert_eq!(render(&p), bytes, "rendering is deterministic");
    }

    #[test]
    fn enforces_the_allow_list() {
        let c = parse(&render(&example())).unwrap();
        assert_eq!(c.mode, Mode::Strict);
        assert!(c.enforce);
        assert!(c.forward_proxy.enabled);
        assert!(c.forward_proxy.sni_verification);
        assert_eq!(
            c.api_allowlist,
            [
                "*.corp.example",
                "*.deep.corp.example",
                "*.example.org",
                "*.githubusercontent.com",
                "10.1.2.3",
                "2001:db8::7",
                "api.anthropic.com",
                "example.org",
                "registry.npmjs.org",
            ]
        );
        // `example.org` and `deep.corp.example` are allowed by other patterns.
        assert_eq!(
            c.fetch_proxy.monitoring.blocklist,
            ["corp.example", "githubusercontent.com"]
        );
    }

    #[test]
    fn admits_the_names_the_policy_admits() {
        let p = example();
        let c = config(&p);
        for host in [
            "api.anthropic.com",
            "anthropic.com",
            "x.api.anthropic.com",
            "githubusercontent.com",
            "raw.githubusercontent.com",
            "a.b.githubusercontent.com",
            "evilgithubusercontent.com",
            "example.org",
            "www.example.org",
            "corp.example",
            "deep.corp.example",
            "x.deep.corp.example",
            "registry.npmjs.org",
            "npmjs.org",
            "10.1.2.3",
            "10.1.2.4",
            "2001:db8::7",
            "2001:db8::8",
            "example.com",
            DENY_ALL,
        ] {
            assert_eq!(
                pipelock_admits(&c, host),
                allowed_by_name(&p, host),
                "{host}"
            );
        }
    }

    #[test]
    fn ssrf_protection_is_on_and_opens_only_allow_addresses() {
        let c = parse(&render(&example())).unwrap();
        let refused = |addr: &str| {
            let addr: IpAddr = addr.parse().unwrap();
            c.internal.iter().any(|r| r.contains(addr))
                && !c.ssrf.ip_allowlist.iter().any(|r| r.contains(addr))
        };
        for addr in [
            "127.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "64:ff9b::7f00:1",
        ] {
            assert!(refused(addr), "{addr} is reachable");
        }
        for addr in ["10.9.8.7", "fd00:1::5", "1.1.1.1", "2606:4700::1111"] {
            assert!(!refused(addr), "{addr} is refused");
        }
        assert!(c.trusted_domains.is_empty());
        assert_eq!(c.ssrf.ip_allowlist, example().allow_addresses);
    }

    #[test]
    fn an_empty_policy_allows_nothing() {
        let c = parse(&render(&policy(&[], &[]))).unwrap();
        assert_eq!(c.mode, Mode::Strict);
        assert_eq!(c.api_allowlist, [DENY_ALL]);
        assert_eq!(c.fetch_proxy.monitoring.blocklist, [DENY_ALL]);
        assert!(!pipelock_admits(&c, DENY_ALL));
        assert!(!pipelock_admits(&c, "example.com"));
        assert!(c.ssrf.ip_allowlist.is_empty());
    }

    #[test]
    fn ports_collapse_to_one_entry() {
        let c = config(&policy(&["a.example.com", "a.example.com:8443"], &[]));
        assert_eq!(c.api_allowlist, ["a.example.com"]);
    }

    #[test]
    fn writes_only_the_modelled_keys() {
        let text = String::from_utf8(render(&example())).unwrap();
        let value: serde_yaml::Value = super::super::yaml::from_str(&text).unwrap();
        let keys: Vec<&str> = value
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "version",
                "mode",
                "enforce",
                "api_allowlist",
                "fetch_proxy",
                "forward_proxy",
                "logging",
                "internal",
                "trusted_domains",
                "ssrf",
            ]
        );
        assert!(!text.contains("listen"), "the listen address is a flag");
        assert!(!text.contains("\n---"), "one YAML document");
    }

    #[test]
    fn refuses_unknown_fields() {
        let mut bytes = render(&example());
        bytes.extend_from_slice(b"explain_blocks: true\n");
        assert!(parse(&bytes).is_err());
        let text = String::from_utf8(render(&example())).unwrap();
        let balanced = text.replace("mode: strict", "mode: balanced");
        assert!(parse(balanced.as_bytes()).is_err());
    }
}
