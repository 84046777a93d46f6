//! `cargo xtask bench`, egress part: the built-in egress proxy (release build) side by side with a
//! direct connection and with tinyproxy (Debian's) as a peer: bulk throughput through a CONNECT
//! tunnel, added latency per request, and memory per idle tunnel. Everything runs on 127.0.0.1,
//! every loop is bounded, and every process it starts is stopped when it returns.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fs_err as fs;

/// Bytes per bulk run, runs per contender (the median is reported).
const BULK_BYTES: u64 = 1 << 30;
const BULK_RUNS: usize = 5;
/// New tunnels per latency sample set, and round trips inside one tunnel.
const LATENCY_REQUESTS: usize = 300;
const ROUND_TRIPS: usize = 2000;
const IDLE_TUNNELS: usize = 1000;
/// Where Debian's package puts tinyproxy (bookworm: /usr/bin; older: /usr/sbin).
const TINYPROXY: [&str; 2] = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"];

pub fn run() -> anyhow::Result<()> {
    // BOTTLE_BIN measures a given build instead (to compare two versions side by side).
    let bottle = match std::env::var_os("BOTTLE_BIN") {
        Some(path) => PathBuf::from(path),
        None => crate::build_release(&[])?.join("bottle"),
    };
    let tinyproxy = which_tinyproxy()?;
    let work = crate::bench_dir("egress")?;
    let upstream = Upstream::start()?;
    let target = format!("127.0.0.1:{}", upstream.addr.port());

    let mut results = Vec::new();
    let direct = Contender::Direct(upstream.addr);
    let bottle_proxy = Proxy::bottle(&bottle, &work, &target)?;
    let tiny = Proxy::tinyproxy(&tinyproxy, &work, upstream.addr.port())?;
    let contenders = [
        ("direct", direct),
        (
            "bottle",
            Contender::Proxy(bottle_proxy.addr, target.clone()),
        ),
        ("tinyproxy", Contender::Proxy(tiny.addr, target.clone())),
    ];

    // Every measurement interleaves the contenders, so that a burst of load from elsewhere on
    // the machine hits all of them alike.
    let mut bulk: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    let mut cpu: Vec<Duration> = vec![Duration::ZERO; contenders.len()];
    let pids = [None, Some(bottle_proxy.pid()), Some(tiny.pid())];
    for _ in 0..BULK_RUNS {
        for (i, (_, c)) in contenders.iter().enumerate() {
            let before = pids[i].map(cpu_time).transpose()?;
            bulk[i].push(throughput(c)?);
            if let (Some(pid), Some(before)) = (pids[i], before) {
                cpu[i] += cpu_time(pid)?.saturating_sub(before);
            }
        }
    }
    let mut new_tunnel: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..LATENCY_REQUESTS {
        for (i, (_, c)) in contenders.iter().enumerate() {
            new_tunnel[i].push(new_request_latency(c)?);
        }
    }
    let mut open: Vec<TcpStream> = contenders
        .iter()
        .map(|(_, c)| {
            let mut s = c.open()?;
            s.write_all(b"E")?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut round_trip: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..ROUND_TRIPS {
        for (i, s) in open.iter_mut().enumerate() {
            let start = Instant::now();
            ping(s)?;
            round_trip[i].push(start.elapsed().as_secs_f64());
        }
    }
    drop(open);
    for (i, (name, _)) in contenders.iter().enumerate() {
        results.push(Row {
            name,
            bulk: median(&mut bulk[i]),
            new_tunnel: Duration::from_secs_f64(median(&mut new_tunnel[i])),
            round_trip: Duration::from_secs_f64(median(&mut round_trip[i])),
            cpu_per_gib: (i > 0).then(|| {
                cpu[i].div_f64((BULK_RUNS as u64 * BULK_BYTES) as f64 / (1u64 << 30) as f64)
            }),
            idle_kib: None,
        });
    }
    // Memory last, with fresh processes: what 1,000 idle tunnels add to a warm proxy.
    drop(bottle_proxy);
    drop(tiny);
    let bottle_proxy = Proxy::bottle(&bottle, &work, &target)?;
    results[1].idle_kib = Some(idle_memory(&bottle_proxy, &target)?);
    drop(bottle_proxy);
    let tiny = Proxy::tinyproxy(&tinyproxy, &work, upstream.addr.port())?;
    results[2].idle_kib = Some(idle_memory(&tiny, &target)?);
    drop(tiny);

    print_report(&results);
    fs::remove_dir_all(&work)?;
    Ok(())
}

struct Row {
    name: &'static str,
    /// MiB/s.
    bulk: f64,
    /// Median time to open a connection (and tunnel) and get a first reply.
    new_tunnel: Duration,
    /// Median time of one small round trip on an open connection.
    round_trip: Duration,
    /// The proxy's own CPU time (user + system) per GiB tunnelled: unlike throughput, this does
    /// not depend on what else the machine is doing.
    cpu_per_gib: Option<Duration>,
    idle_kib: Option<f64>,
}

fn print_report(rows: &[Row]) {
    println!(
        "\negress proxy on loopback ({} MiB per bulk run, median of {BULK_RUNS}; {LATENCY_REQUESTS} new tunnels; {ROUND_TRIPS} round trips; {IDLE_TUNNELS} idle tunnels)",
        BULK_BYTES >> 20
    );
    println!(
        "  {:<10} {:>11} {:>14} {:>19} {:>11} {:>20}",
        "", "bulk MiB/s", "CPU ms/GiB", "new tunnel + reply", "round trip", "RSS per idle tunnel"
    );
    for r in rows {
        println!(
            "  {:<10} {:>11.0} {:>14} {:>16.0} µs {:>8.1} µs {:>20}",
            r.name,
            r.bulk,
            r.cpu_per_gib
                .map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)),
            r.new_tunnel.as_secs_f64() * 1e6,
            r.round_trip.as_secs_f64() * 1e6,
            r.idle_kib.map_or("-".to_owned(), |k| format!("{k:.1} KiB")),
        )
    }
    let (direct, bottle, tiny) = (&rows[0], &rows[1], &rows[2]);
    let added = |r: &Row| (r.new_tunnel.as_secs_f64() - direct.new_tunnel.as_secs_f64()) * 1e6;
    let added_rt = |r: &Row| (r.round_trip.as_secs_f64() - direct.round_trip.as_secs_f64()) * 1e6;
    println!(
        "  added latency per request: bottle {:.0} µs, tinyproxy {:.0} µs (per round trip in a tunnel: {:.1} µs, {:.1} µs)",
        added(bottle),
        added(tiny),
        added_rt(bottle),
        added_rt(tiny)
    );
    let verdict = |ok: bool| if ok { "ok  " } else { "MISS" };
    let share = bottle.bulk / direct.bulk * 100.0;
    println!("  targets:");
    println!(
        "    {} throughput >= 90% of direct: {share:.0}%",
        verdict(share >= 90.0)
    );
    println!(
        "    {} throughput >= tinyproxy's: {:.0} vs {:.0} MiB/s",
        verdict(bottle.bulk >= tiny.bulk),
        bottle.bulk,
        tiny.bulk
    );
    let kib = bottle.idle_kib.unwrap_or(f64::INFINITY);
    println!(
        "    {} < 64 KiB per idle tunnel: {kib:.1} KiB",
        verdict(kib < 64.0)
    );
}

/// How a client reaches the upstream.
enum Contender {
    Direct(SocketAddr),
    /// A proxy's address and the CONNECT target.
    Proxy(SocketAddr, String),
}

impl Contender {
    fn open(&self) -> anyhow::Result<TcpStream> {
        match self {
            Contender::Direct(addr) => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Ok(s)
            }
            Contender::Proxy(proxy, target) => {
                let mut s = TcpStream::connect(proxy)
                    .with_context(|| format!("failed to connect to the proxy at {proxy}"))?;
                s.set_nodelay(true)?;
                s.write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )?;
                let head = read_head(&mut s)?;
                if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
                    bail!(
                        "the proxy at {proxy} refused CONNECT {target}: {}",
                        head.lines().next().unwrap_or("")
                    );
                }
                Ok(s)
            }
        }
    }
}

/// Reads a response head byte by byte, so that no tunnel byte is consumed with it.
fn read_head(s: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            bail!("the proxy closed the connection during its answer");
        }
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            bail!("the proxy's answer has no end");
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn throughput(c: &Contender) -> anyhow::Result<f64> {
    let mut s = c.open()?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let start = Instant::now();
    s.write_all(b"D")?;
    s.write_all(&BULK_BYTES.to_be_bytes())?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let elapsed = start.elapsed();
    if total != BULK_BYTES {
        bail!("received {total} of {BULK_BYTES} bytes");
    }
    Ok(total as f64 / (1 << 20) as f64 / elapsed.as_secs_f64())
}

fn ping(s: &mut TcpStream) -> anyhow::Result<()> {
    s.write_all(b"x")?;
    let mut reply = [0u8; 1];
    s.read_exact(&mut reply)?;
    Ok(())
}

/// Seconds from connecting (and opening the tunnel) to the first echoed byte.
fn new_request_latency(c: &Contender) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut s = c.open()?;
    s.write_all(b"E")?;
    ping(&mut s)?;
    Ok(start.elapsed().as_secs_f64())
}

/// RSS added by `IDLE_TUNNELS` open tunnels, each used for one round trip, then left idle.
fn idle_memory(proxy: &Proxy, target: &str) -> anyhow::Result<f64> {
    let via = Contender::Proxy(proxy.addr, target.to_owned());
    // Warm up: the allocator and runtime reach their steady size first.
    for _ in 0..20 {
        let mut s = via.open()?;
        s.write_all(b"E")?;
        ping(&mut s)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(proxy.pid())?;
    let mut tunnels = Vec::with_capacity(IDLE_TUNNELS);
    for _ in 0..IDLE_TUNNELS {
        let mut s = via.open()?;
        s.write_all(b"E")?;
        ping(&mut s)?;
        tunnels.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(proxy.pid())?;
    drop(tunnels);
    Ok((after as f64 - before as f64) / IDLE_TUNNELS as f64)
}

/// User plus system time of a process, from /proc/PID/stat (fields 14 and 15, in clock ticks of
/// 1/100 s on Linux).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat")?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// The test upstream on 127.0.0.1: after one command byte, `D` + 8-byte length streams that many
/// bytes and closes; `E` echoes until the client closes. A thread per connection.
struct Upstream {
    addr: SocketAddr,
}

impl Upstream {
    fn start() -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || serve_upstream(stream));
            }
        });
        Ok(Upstream { addr })
    }
}

fn serve_upstream(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut command = [0u8; 1];
    s.read_exact(&mut command)?;
    match command[0] {
        b'D' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            let mut left = u64::from_be_bytes(len);
            let chunk = vec![0x5au8; 256 * 1024];
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                s.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            s.shutdown(std::net::Shutdown::Write)
        }
        b'E' => {
            let mut buffer = [0u8; 64];
            loop {
                let n = s.read(&mut buffer)?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buffer[..n])?;
            }
        }
        _ => Ok(()),
    }
}

/// A proxy process, killed (by its own pid) when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `bottle proxy` for a stage that allows the upstream's address (loopback, opened on purpose).
    fn bottle(bottle: &Path, work: &Path, target: &str) -> anyhow::Result<Proxy> {
        let manifest = work.join("bench.toml");
        fs::write(
            &manifest,
            format!(
                "[agents.bench]\nbottle = \"b\"\ncommand = [\"sh\"]\n\n[bottles.b]\nimage = \"docker.io/library/alpine:3.20\"\negress = {{ allow = [\"{target}\"], allow_addresses = [\"127.0.0.1\"] }}\n"
            ),
        )?;
        let store = work.join("stages");
        let out = Command::new(bottle)
            .arg("gen")
            .arg(&manifest)
            .arg("--store")
            .arg(&store)
            .output()?;
        if !out.status.success() {
            bail!(
                "bottle gen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = String::from_utf8(out.stdout)?.trim().to_owned();
        let mut child = Command::new(bottle)
            .args([
                "proxy",
                &id,
                "--listen",
                "127.0.0.1:0",
                "--max-tunnels",
                "4096",
                "--log",
            ])
            .arg(work.join("egress.jsonl"))
            .arg("--store")
            .arg(&store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start bottle proxy")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("bottle proxy printed {line:?}, not its address"))?;
        Ok(Proxy { child, addr })
    }

    /// Our own tinyproxy instance from a config file on a free loopback port, in the foreground.
    fn tinyproxy(binary: &Path, work: &Path, upstream_port: u16) -> anyhow::Result<Proxy> {
        let port = free_port()?;
        let config = work.join("tinyproxy.conf");
        fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 4096\nAllow 127.0.0.1\nConnectPort {upstream_port}\nDisableViaHeader Yes\nLogLevel Critical\n"
            ),
        )?;
        let child = Command::new(binary)
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start tinyproxy")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("tinyproxy did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Proxy { child, addr })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn which_tinyproxy() -> anyhow::Result<PathBuf> {
    TINYPROXY
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "tinyproxy is missing (looked for {}): install Debian's package with `apt-get install tinyproxy`",
                TINYPROXY.join(" and ")
            )
        })
}
