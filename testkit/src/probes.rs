//! What the stand-in guest tries once attached, and the report the tests read. Must work:
//! resolving `proxy.internal` and a TCP exchange with every sidecar the Smolfile's environment
//! names. Must fail: the targets the test lists (host loopback ports that are no sidecar, host
//! and beyond-host addresses), other names, a TXT query, and gvproxy's `expose` of a unix
//! socket over a file the test owns.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::Machine;
use crate::dns;
use crate::guest::{Connect, Guest};

pub const PROXY_NAME: &str = "proxy.internal";
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub report: PathBuf,
    pub exit_code: i32,
    /// Stay attached this long before probing (for tests that kill the runner mid-run).
    #[serde(default)]
    pub hold_ms: u64,
    /// Must-fail TCP targets; `ip` = "proxy" means the resolved proxy address.
    #[serde(default)]
    pub must_fail_tcp: Vec<Target>,
    #[serde(default)]
    pub must_fail_names: Vec<String>,
    #[serde(default)]
    pub txt_name: Option<String>,
    #[serde(default)]
    pub expose_target: Option<PathBuf>,
    /// Raw requests sent to the egress sidecar (`HTTP_PROXY`), one connection each: what the
    /// guest's HTTP clients would send through the proxy.
    #[serde(default)]
    pub proxy_requests: Vec<ProxyRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyRequest {
    pub label: String,
    pub request: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub label: String,
    pub ip: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub proxy_ip: Option<Ipv4Addr>,
    /// Sidecar (by variable) -> "established: <reply>", "refused" or "timed out".
    pub sidecars: BTreeMap<String, String>,
    pub must_fail_tcp: BTreeMap<String, String>,
    /// Name -> "rcode N, A [..]" or "no answer".
    pub names: BTreeMap<String, String>,
    pub txt: Option<String>,
    pub expose: Option<String>,
    /// Label -> what the egress sidecar answered to that request.
    #[serde(default)]
    pub proxy_requests: BTreeMap<String, String>,
    /// Secret name -> whether its host variable was in smolvm's environment.
    pub secrets_present: BTreeMap<String, bool>,
    pub errors: Vec<String>,
}

fn describe(outcome: &Connect) -> String {
    match outcome {
        Connect::Established { reply } => format!("established: {reply}"),
        Connect::Refused => "refused".into(),
        Connect::TimedOut => "timed out".into(),
    }
}

fn resolve(
    guest: &mut Guest,
    dns_ip: Ipv4Addr,
    name: &str,
    qtype: u16,
    id: u16,
) -> std::io::Result<Option<dns::Answer>> {
    let reply = guest.udp_exchange((dns_ip, 53), &dns::query(id, name, qtype), TIMEOUT)?;
    Ok(reply.and_then(|r| dns::parse(&r)))
}

fn describe_answer(answer: &Option<dns::Answer>) -> String {
    match answer {
        None => "no answer".into(),
        Some(a) => format!("rcode {}, {} records, A {:?}", a.rcode, a.count, a.a),
    }
}

/// The (variable, port) of each sidecar URL in the guest's environment: every variable whose
/// value is a URL on `proxy.internal` (egress once, as `HTTP_PROXY`; git, supervise and custom
/// sidecars by their own variables).
pub fn sidecar_ports(env: &BTreeMap<String, String>) -> Vec<(String, u16)> {
    const TWINS: [&str; 3] = ["HTTPS_PROXY", "https_proxy", "http_proxy"];
    env.iter()
        .filter(|(var, _)| !TWINS.contains(&var.as_str()))
        .filter_map(|(var, url)| {
            let rest = url.split_once("://")?.1;
            let authority = rest.split('/').next()?;
            let (host, port) = authority.rsplit_once(':')?;
            (host == PROXY_NAME).then_some((var.clone(), port.parse().ok()?))
        })
        .collect()
}

pub fn run(guest: &mut Guest, machine: &Machine, config: &Config) -> Report {
    let mut report = Report::default();
    for (name, var) in &machine.secrets {
        report
            .secrets_present
            .insert(name.clone(), std::env::var_os(var).is_some());
    }
    if let Err(e) = probe(guest, machine, config, &mut report) {
        report.errors.push(e.to_string());
    }
    report
}

fn probe(
    guest: &mut Guest,
    machine: &Machine,
    config: &Config,
    report: &mut Report,
) -> std::io::Result<()> {
    let answer = resolve(guest, machine.dns, PROXY_NAME, dns::TYPE_A, 1)?;
    report
        .names
        .insert(PROXY_NAME.into(), describe_answer(&answer));
    report.proxy_ip = answer.and_then(|a| a.a.first().copied());
    let Some(proxy) = report.proxy_ip else {
        report.errors.push("proxy.internal did not resolve".into());
        return Ok(());
    };
    for (var, port) in sidecar_ports(&machine.env) {
        let outcome = guest.tcp_exchange(
            (proxy, port),
            format!("hello from {var}\n").as_bytes(),
            TIMEOUT,
        )?;
        report.sidecars.insert(var, describe(&outcome));
    }
    let egress_port = sidecar_ports(&machine.env)
        .into_iter()
        .find(|(var, _)| var == "HTTP_PROXY")
        .map(|(_, port)| port);
    for request in &config.proxy_requests {
        let Some(port) = egress_port else {
            report
                .errors
                .push("no HTTP_PROXY in the guest's environment".into());
            break;
        };
        let outcome = guest.tcp_exchange((proxy, port), request.request.as_bytes(), TIMEOUT)?;
        report
            .proxy_requests
            .insert(request.label.clone(), describe(&outcome));
    }
    for target in &config.must_fail_tcp {
        let ip = if target.ip == "proxy" {
            proxy
        } else {
            target
                .ip
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad ip {}", target.ip)))?
        };
        let outcome = guest.tcp_exchange((ip, target.port), b"hello\n", TIMEOUT)?;
        report
            .must_fail_tcp
            .insert(target.label.clone(), describe(&outcome));
    }
    for (i, name) in config.must_fail_names.iter().enumerate() {
        let answer = resolve(guest, machine.dns, name, dns::TYPE_A, 100 + i as u16)?;
        report.names.insert(name.clone(), describe_answer(&answer));
    }
    if let Some(name) = &config.txt_name {
        let answer = resolve(guest, machine.dns, name, dns::TYPE_TXT, 99)?;
        report.txt = Some(describe_answer(&answer));
    }
    if let Some(target) = &config.expose_target {
        let body = serde_json::json!({
            "local": target.display().to_string(),
            "remote": format!("tcp://{}:22", machine.address),
            "protocol": "unix",
        })
        .to_string();
        let request = format!(
            "POST /services/forwarder/expose HTTP/1.1\r\nHost: {gw}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
            gw = machine.gateway,
            len = body.len()
        );
        let outcome = guest.tcp_exchange((machine.gateway, 80), request.as_bytes(), TIMEOUT)?;
        report.expose = Some(describe(&outcome));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_urls_are_read_from_the_guest_environment() {
        let env = BTreeMap::from([
            (
                "HTTP_PROXY".to_owned(),
                "http://proxy.internal:3128".to_owned(),
            ),
            (
                "GIT_GATE_URL".to_owned(),
                "git://proxy.internal:9418/".to_owned(),
            ),
            ("OTHER".to_owned(), "http://x:1".to_owned()),
            (
                "https_proxy".to_owned(),
                "http://proxy.internal:3128".to_owned(),
            ),
        ]);
        assert_eq!(
            sidecar_ports(&env),
            vec![
                ("GIT_GATE_URL".to_owned(), 9418),
                ("HTTP_PROXY".to_owned(), 3128)
            ]
        );
    }
}
