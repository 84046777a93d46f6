//! The host side of bottle's end-to-end tests, for tests only.
//!
//! `testhost serve --addr IP:PORT --banner NAME [--exit-after-ms MS]`: a sidecar (or decoy)
//! server: for each connection it reads one line and answers `NAME:<line>`, then closes; with
//! `--exit-after-ms` it exits (code 3) after that long, like a sidecar that crashes.
//!
//! `testhost netns [--listen IP:PORT=NAME]... [--pid-file FILE] -- COMMAND...`: run inside a
//! fresh network namespace (the test starts it under `unshare --user --map-root-user --net`):
//! brings up loopback, adds a veth pair `t0`/`t1` with 198.18.0.1/24 on `t0` and the default
//! route through it (packets sent there go nowhere: nothing leaves the namespace), starts the listed
//! servers, then runs COMMAND and exits with its code.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, ExitCode};
use std::thread;

fn serve(addr: SocketAddr, banner: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let banner = banner.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = (&conn).write_all(format!("{banner}:{line}").as_bytes());
            });
        }
    });
    Ok(())
}

/// `ip` from iproute2: on PATH, or where Debian puts it (sbin is not on every PATH).
fn ip_program() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("ip"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| "ip".into())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let status = Command::new(ip_program())
        .args(args)
        .status()
        .map_err(|e| format!("ip: {e} (install iproute2)"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {status}", args.join(" ")))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("testhost: {e}");
            ExitCode::from(99)
        }
    }
}

fn parse_listen(spec: &str) -> Result<(SocketAddr, String), String> {
    let (addr, banner) = spec.split_once('=').ok_or(format!("bad --listen {spec}"))?;
    Ok((
        addr.parse().map_err(|_| format!("bad address {addr}"))?,
        banner.to_owned(),
    ))
}

fn run() -> Result<u8, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let mut addr = None;
            let mut banner = None;
            let mut exit_after = None;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--addr" => addr = it.next().and_then(|s| s.parse().ok()),
                    "--banner" => banner = it.next().cloned(),
                    "--exit-after-ms" => exit_after = it.next().and_then(|s| s.parse().ok()),
                    other => return Err(format!("unexpected {other}")),
                }
            }
            let (addr, banner) = addr.zip(banner).ok_or("serve needs --addr and --banner")?;
            serve(addr, banner).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            if let Some(ms) = exit_after {
                thread::sleep(std::time::Duration::from_millis(ms));
                return Ok(3);
            }
            loop {
                thread::park();
            }
        }
        Some("netns") => {
            let split = args
                .iter()
                .position(|a| a == "--")
                .ok_or("netns needs -- COMMAND")?;
            let mut listens = Vec::new();
            let mut pid_file = None;
            let mut it = args[1..split].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--listen" => {
                        listens.push(parse_listen(it.next().ok_or("--listen needs a value")?)?)
                    }
                    "--pid-file" => pid_file = it.next().cloned(),
                    other => return Err(format!("unexpected {other}")),
                }
            }
            ip(&["link", "set", "lo", "up"])?;
            // A veth pair whose far end has no address and no peer: what is routed there is
            // never answered and never leaves the namespace (a dummy device would do, but its
            // module is not always loadable).
            ip(&["link", "add", "t0", "type", "veth", "peer", "name", "t1"])?;
            ip(&["addr", "add", "198.18.0.1/24", "dev", "t0"])?;
            ip(&["link", "set", "t1", "up"])?;
            ip(&["link", "set", "t0", "up"])?;
            ip(&["route", "add", "default", "via", "198.18.0.2", "dev", "t0"])?;
            for (addr, banner) in listens {
                serve(addr, banner).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            }
            let command = &args[split + 1..];
            let mut child = Command::new(&command[0])
                .args(&command[1..])
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", command[0]))?;
            if let Some(path) = pid_file {
                std::fs::write(path, child.id().to_string()).map_err(|e| e.to_string())?;
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)) as u8)
        }
        _ => Err("usage: testhost serve … | testhost netns … -- COMMAND".into()),
    }
}
