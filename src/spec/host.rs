//! Egress host patterns: `example.com`, `*.example.com`, an IP literal, each with an optional
//! `:port`. Parsing normalises every equal spelling to one canonical string, so that the stage id
//! does not depend on how the user happened to write a host.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::Invalid;

/// What a pattern matches, before the port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostMatch {
    /// Exactly this DNS name (lower case, no trailing dot).
    Exact(String),
    /// Any name strictly below this suffix: `*.example.com` matches `a.example.com` and
    /// `a.b.example.com`, never `example.com` itself.
    Subdomains(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPattern {
    pub host: HostMatch,
    /// `None` means the protocol's default port (443 for CONNECT, 80 for plain HTTP).
    pub port: Option<u16>,
}

impl HostPattern {
    /// Does this pattern allow `host` (already lower case, no trailing dot) on `port`?
    pub fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        match &self.host {
            HostMatch::Exact(name) => name == host,
            HostMatch::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
            HostMatch::Ipv4(ip) => host.parse::<Ipv4Addr>().is_ok_and(|h| h == *ip),
            HostMatch::Ipv6(ip) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<Ipv6Addr>()
                .is_ok_and(|h| h == *ip),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Exact(name) => f.write_str(name)?,
            HostMatch::Subdomains(suffix) => write!(f, "*.{suffix}")?,
            HostMatch::Ipv4(ip) => write!(f, "{ip}")?,
            HostMatch::Ipv6(ip) => write!(f, "[{ip}]")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl FromStr for HostPattern {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        let hint = "write a host name (`api.example.com`), a wildcard for its subdomains \
                    (`*.example.com`) or an IP address, each optionally followed by `:PORT`";
        if text.is_empty() {
            return Err(Invalid::new("empty host pattern").help(hint));
        }
        if text.contains("://") || text.contains('/') {
            return Err(
                Invalid::new(format!("`{text}` looks like a URL, not a host"))
                    .help("write only the host and, if needed, the port: `example.com:443`"),
            );
        }
        // IPv6 literals carry colons, so they must be bracketed to take a port.
        if let Some(rest) = text.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| Invalid::new(format!("`{text}` has no closing `]`")).help(hint))?;
            let ip = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| Invalid::new(format!("`{addr}` is not an IPv6 address")).help(hint))?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(after.strip_prefix(':').unwrap_or(after), text)?),
            };
            return Ok(HostPattern {
                host: HostMatch::Ipv6(ip),
                port,
            });
        }
        if text.parse::<Ipv6Addr>().is_ok() {
            return Err(
                Invalid::new(format!("IPv6 address `{text}` must be in brackets"))
                    .help(format!("write `[{text}]`, or `[{text}]:443` with a port")),
            );
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(parse_port(port, text)?)),
            None => (text, None),
        };
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Ok(HostPattern {
                host: HostMatch::Ipv4(ip),
                port,
            });
        }
        if host.ends_with('.') {
            return Err(Invalid::new(format!("host `{host}` ends with a dot"))
                .help(format!("write `{}`", host.trim_end_matches('.'))));
        }
        let lower = host.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, lower.as_str()),
        };
        if name.contains('*') {
            return Err(
                Invalid::new(format!("`{host}` has a `*` that can never match")).help(
                    "a wildcard may only stand as the whole first label, as in `*.example.com`",
                ),
            );
        }
        check_dns_name(name).map_err(|why| {
            Invalid::new(format!("`{host}` is not a valid host name: {why}")).help(hint)
        })?;
        if wildcard && !name.contains('.') {
            return Err(
                Invalid::new(format!("`{host}` would allow a whole top-level domain"))
                    .help("name the organisation's domain, as in `*.example.com`"),
            );
        }
        let host = if wildcard {
            HostMatch::Subdomains(name.to_owned())
        } else {
            HostMatch::Exact(name.to_owned())
        };
        Ok(HostPattern { host, port })
    }
}

fn parse_port(port: &str, whole: &str) -> Result<u16, Invalid> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('0') => Ok(p),
        _ => Err(Invalid::new(format!("`{port}` in `{whole}` is not a port"))
            .help("a port is a number from 1 to 65535, without leading zeros")),
    }
}

/// Letters, digits and hyphens, labels of 1 to 63 bytes, 253 in all.
fn check_dns_name(name: &str) -> Result<(), String> {
    if !name.is_ascii() {
        return Err("it is not ASCII (write internationalised names in their `xn--` form)".into());
    }
    if name.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "`{}` is not allowed in a host name",
                bad.escape_default()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("its last label is all digits (an IPv4 address has four numbers)".into());
    }
    Ok(())
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let pattern: HostPattern = text.parse().map_err(serde::de::Error::custom)?;
        // A stored pattern must already be canonical, or one id could name two spellings.
        if pattern.to_string() != text {
            return Err(serde::de::Error::custom(format!(
                "host pattern `{text}` is not in canonical form `{pattern}`"
            )));
        }
        Ok(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> HostPattern {
        text.parse()
            .unwrap_or_else(|e: Invalid| panic!("{text}: {}", e.message))
    }

    #[test]
    fn canonical_spellings() {
        assert_eq!(parse("API.Example.COM").to_string(), "api.example.com");
        assert_eq!(parse("*.Example.com:443").to_string(), "*.example.com:443");
        assert_eq!(parse("[::1]:8080").to_string(), "[::1]:8080");
        assert_eq!(parse("10.0.0.1").to_string(), "10.0.0.1");
    }

    #[test]
    fn wildcard_does_not_match_its_apex() {
        let p = parse("*.example.com");
        assert!(p.matches("a.example.com", 443, 443));
        assert!(p.matches("a.b.example.com", 443, 443));
        assert!(!p.matches("example.com", 443, 443));
        assert!(!p.matches("badexample.com", 443, 443));
        assert!(!p.matches("a.example.com", 80, 443));
    }

    #[test]
    fn rejects_patterns_that_cannot_match() {
        for bad in [
            "",
            "*",
            "*.com",
            "a*.example.com",
            "foo..bar",
            "example.com.",
            "https://x.org",
            "x.org:0",
            "x.org:65536",
            "x.org:08",
            "-a.org",
            "b\u{e9}b\u{e9}.fr",
            "::1",
            "1.2.3",
            "a b.org",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} was accepted");
        }
    }
}
