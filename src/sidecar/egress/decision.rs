//! The egress decision: a pure function from (policy, host, port, resolved addresses) to
//! "connect to this address" or "refuse, because". It does no I/O: the server resolves names and
//! opens sockets, and connects only to an address this module returned.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::address::{self, AddressClass};
use crate::render::egress::EgressPolicy;
use crate::spec::host::HostPattern;

/// The default port of a CONNECT tunnel (TLS).
pub const CONNECT_PORT: u16 = 443;
/// The default port of plain, absolute-form HTTP.
pub const HTTP_PORT: u16 = 80;

/// Why a request was refused or failed. The `code` goes into the audit log; `Display` is the
/// one line the agent reads in the 403 (or 4xx/5xx) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The name (or name and port) is on no `allow` pattern.
    NotListed { host: String, port: u16 },
    /// An IP address was asked for directly and no `allow` pattern lists it.
    IpLiteral { addr: IpAddr, port: u16 },
    /// The name resolved to an address refused by default, not opened by `allow_addresses`.
    RestrictedAddress {
        host: String,
        addr: IpAddr,
        class: AddressClass,
    },
    /// The name resolved to no address at all.
    NoAddress { host: String },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotListed { .. } => "not_listed",
            Refusal::IpLiteral { .. } => "ip_literal",
            Refusal::RestrictedAddress { .. } => "restricted_address",
            Refusal::NoAddress { .. } => "no_address",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotListed { host, port } => write!(
                f,
                "{host}:{port} is not on this bottle's egress allow list (egress.allow in bottle.toml)"
            ),
            Refusal::IpLiteral { addr, port } => write!(
                f,
                "IP address {} on port {port} is not on this bottle's egress allow list: use a listed host name",
                bracketed(*addr)
            ),
            Refusal::RestrictedAddress { host, addr, class } => write!(
                f,
                "{host} resolves to {addr}, {class}, which egress.allow_addresses does not open"
            ),
            Refusal::NoAddress { host } => write!(f, "{host} resolves to no address"),
        }
    }
}

fn bracketed(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// What the client asked for, after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Normalises a request's host: lower case, one trailing dot removed, IPv6 brackets removed.
    /// `None` when it is neither a plausible DNS name nor an IP literal.
    pub fn parse(text: &str) -> Option<Host> {
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner.parse().ok().map(Host::Ip);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let plausible = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        plausible.then_some(Host::Name(name))
    }

    /// The text `HostPattern::matches` expects.
    fn match_text(&self) -> String {
        match self {
            Host::Name(name) => name.clone(),
            Host::Ip(IpAddr::V4(v4)) => v4.to_string(),
            Host::Ip(IpAddr::V6(v6)) => v6.to_string(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => f.write_str(&bracketed(*ip)),
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Connect to exactly this address (one that was checked).
    Allow(SocketAddr),
    Refuse(Refusal),
}

/// The check before any lookup: is `host:port` on the list at all? Unlisted names are never
/// resolved, so the agent cannot use the proxy's DNS as a side channel.
pub fn admit(
    policy: &EgressPolicy,
    host: &Host,
    port: u16,
    default_port: u16,
) -> Result<(), Refusal> {
    let text = host.match_text();
    if listed(&policy.allow, &text, port, default_port) {
        return Ok(());
    }
    Err(match host {
        Host::Name(name) => Refusal::NotListed {
            host: name.clone(),
            port,
        },
        Host::Ip(addr) => Refusal::IpLiteral { addr: *addr, port },
    })
}

fn listed(allow: &[HostPattern], host: &str, port: u16, default_port: u16) -> bool {
    allow.iter().any(|p| p.matches(host, port, default_port))
}

/// The whole decision. `resolved` are all the addresses the name resolved to (for an IP literal,
/// the literal itself). Every one is checked, and any refused address refuses the request: a
/// name that resolves to a public and a private address is treated as pointing inside.
pub fn decide(
    policy: &EgressPolicy,
    host: &Host,
    port: u16,
    default_port: u16,
    resolved: &[IpAddr],
) -> Decision {
    if let Err(refusal) = admit(policy, host, port, default_port) {
        return Decision::Refuse(refusal);
    }
    let Some(first) = resolved.first() else {
        return Decision::Refuse(Refusal::NoAddress {
            host: host.to_string(),
        });
    };
    for addr in resolved {
        if let Some(class) = address::restricted_class(*addr) {
            if !opened(policy, *addr) {
                return Decision::Refuse(Refusal::RestrictedAddress {
                    host: host.to_string(),
                    addr: *addr,
                    class,
                });
            }
        }
    }
    Decision::Allow(SocketAddr::new(*first, port))
}

/// Is `addr` inside a range the policy opened? An IPv4-mapped IPv6 address counts as its IPv4
/// address, so that opening `127.0.0.1` also opens `::ffff:127.0.0.1` and nothing more.
fn opened(policy: &EgressPolicy, addr: IpAddr) -> bool {
    let canonical = addr.to_canonical();
    policy
        .allow_addresses
        .iter()
        .any(|range| range.contains(addr) || range.contains(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::egress::Engine;

    fn policy(allow: &[&str], allow_addresses: &[&str]) -> EgressPolicy {
        EgressPolicy {
            format: crate::STAGE_FORMAT,
            engine: Engine::Builtin,
            allow: allow.iter().map(|p| p.parse().unwrap()).collect(),
            allow_addresses: allow_addresses.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn name(text: &str) -> Host {
        Host::parse(text).unwrap()
    }

    #[test]
    fn allows_a_listed_name_on_a_public_address() {
        let p = policy(&["api.example.com"], &[]);
        assert_eq!(
            decide(
                &p,
                &name("API.Example.com."),
                443,
                CONNECT_PORT,
                &ips(&["93.184.216.34"])
            ),
            Decision::Allow("93.184.216.34:443".parse().unwrap())
        );
    }

    #[test]
    fn default_ports_differ_for_connect_and_plain_http() {
        let p = policy(&["api.example.com"], &[]);
        let public = ips(&["1.1.1.1"]);
        let host = name("api.example.com");
        assert!(matches!(
            decide(&p, &host, 443, CONNECT_PORT, &public),
            Decision::Allow(_)
        ));
        assert!(matches!(
            decide(&p, &host, 80, HTTP_PORT, &public),
            Decision::Allow(_)
        ));
        assert!(matches!(
            decide(&p, &host, 80, CONNECT_PORT, &public),
            Decision::Refuse(Refusal::NotListed { .. })
        ));
        assert!(matches!(
            decide(&p, &host, 8080, HTTP_PORT, &public),
            Decision::Refuse(Refusal::NotListed { .. })
        ));
        let with_port = policy(&["api.example.com:8443"], &[]);
        assert!(matches!(
            decide(&with_port, &host, 8443, CONNECT_PORT, &public),
            Decision::Allow(_)
        ));
        assert!(admit(&with_port, &host, 443, CONNECT_PORT).is_err());
    }

    #[test]
    fn wildcard_does_not_admit_its_apex() {
        let p = policy(&["*.example.com"], &[]);
        assert!(admit(&p, &name("a.example.com"), 443, CONNECT_PORT).is_ok());
        assert_eq!(
            admit(&p, &name("example.com"), 443, CONNECT_PORT),
            Err(Refusal::NotListed {
                host: "example.com".into(),
                port: 443
            })
        );
    }

    #[test]
    fn every_resolved_address_is_checked() {
        let p = policy(&["mixed.example.com"], &[]);
        let decision = decide(
            &p,
            &name("mixed.example.com"),
            443,
            CONNECT_PORT,
            &ips(&["1.1.1.1", "10.0.0.5"]),
        );
        assert_eq!(
            decision,
            Decision::Refuse(Refusal::RestrictedAddress {
                host: "mixed.example.com".into(),
                addr: "10.0.0.5".parse().unwrap(),
                class: AddressClass::Private
            })
        );
    }

    #[test]
    fn allow_addresses_opens_only_its_ranges() {
        let p = policy(&["registry.corp.example"], &["10.20.0.0/16", "127.0.0.1"]);
        let host = name("registry.corp.example");
        assert!(matches!(
            decide(&p, &host, 443, CONNECT_PORT, &ips(&["10.20.1.2"])),
            Decision::Allow(_)
        ));
        assert!(matches!(
            decide(&p, &host, 443, CONNECT_PORT, &ips(&["::ffff:127.0.0.1"])),
            Decision::Allow(_)
        ));
        assert!(matches!(
            decide(&p, &host, 443, CONNECT_PORT, &ips(&["10.21.1.2"])),
            Decision::Refuse(Refusal::RestrictedAddress { .. })
        ));
        assert!(matches!(
            decide(&p, &host, 443, CONNECT_PORT, &ips(&["127.0.0.2"])),
            Decision::Refuse(Refusal::RestrictedAddress {
                class: AddressClass::Loopback,
                ..
            })
        ));
    }

    #[test]
    fn ip_literals_need_a_pattern_and_still_pass_the_address_check() {
        let p = policy(&["1.1.1.1", "[2606:4700::1111]:443", "10.0.0.7"], &[]);
        let literal = |t: &str| Host::parse(t).unwrap();
        assert!(matches!(
            decide(
                &p,
                &literal("1.1.1.1"),
                443,
                CONNECT_PORT,
                &ips(&["1.1.1.1"])
            ),
            Decision::Allow(_)
        ));
        assert!(matches!(
            decide(
                &p,
                &literal("[2606:4700::1111]"),
                443,
                CONNECT_PORT,
                &ips(&["2606:4700::1111"])
            ),
            Decision::Allow(_)
        ));
        assert_eq!(
            admit(&p, &literal("8.8.8.8"), 443, CONNECT_PORT),
            Err(Refusal::IpLiteral {
                addr: "8.8.8.8".parse().unwrap(),
                port: 443
            })
        );
        assert!(matches!(
            decide(
                &p,
                &literal("10.0.0.7"),
                443,
                CONNECT_PORT,
                &ips(&["10.0.0.7"])
            ),
            Decision::Refuse(Refusal::RestrictedAddress { .. })
        ));
    }

    #[test]
    fn no_address_is_a_refusal() {
        let p = policy(&["a.example.com"], &[]);
        assert!(matches!(
            decide(&p, &name("a.example.com"), 443, CONNECT_PORT, &[]),
            Decision::Refuse(Refusal::NoAddress { .. })
        ));
    }

    #[test]
    fn host_parsing_normalises_and_rejects_junk() {
        assert_eq!(
            Host::parse("A.Example.COM."),
            Some(Host::Name("a.example.com".into()))
        );
        assert_eq!(Host::parse("[::1]"), Some(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            Host::parse("127.0.0.1"),
            Some(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        for junk in ["", ".", "a..b", "a b", "a/b", "x%00", "[::1", "é.fr"] {
            assert_eq!(Host::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn refusals_read_as_one_line() {
        let r = Refusal::RestrictedAddress {
            host: "x.example.com".into(),
            addr: "169.254.169.254".parse().unwrap(),
            class: AddressClass::CloudMetadata,
        };
        let text = r.to_string();
        assert!(!text.contains('\n'));
        assert!(text.contains("the cloud metadata address"), "{text}");
    }
}
