//! `bottle proxy`: run a stage's built-in egress proxy in the foreground.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{open_intact_stage, output, StoreArg};
use crate::error::{Exit, UserError};
use crate::render::egress::Engine;
use crate::sidecar::egress::{
    self, server::MIN_HEADER_BYTES, AuditLog, Limits, Override, Resolver,
};
use crate::stage::alloc::SidecarKind;

const LONG_ABOUT: &str = "\
Run a stage's egress proxy in the foreground

The proxy speaks CONNECT (for HTTPS) and absolute-form HTTP, and allows only what the stage's
egress.toml lists. A pattern without a port allows port 443 through CONNECT and port 80 for plain
HTTP. `api.example.com` matches that name only. `*.example.com` matches every name below
example.com (a.example.com, a.b.example.com) but NOT example.com itself: list both to allow both.

Refused with 403 and a one-line reason: hosts not on the list, IP addresses not on the list, and
listed names that resolve to loopback, private (RFC 1918, fc00::/7), link-local, CGNAT, multicast,
unspecified, benchmarking, documentation or cloud metadata addresses, unless egress.allow_addresses
opens them. A name is resolved once and every address is checked; the proxy connects to a checked
address, never looking the name up again.

Once it accepts connections, the proxy prints its address (such as 127.0.0.1:41234) on stdout.
Every decision is one JSON line in the audit log (stderr, or --log FILE); `bottle egress`
summarises it. Ctrl-C or SIGTERM stops the proxy.";

#[derive(Debug, clap::Args)]
#[command(about = "Run a stage's egress proxy in the foreground", long_about = LONG_ABOUT)]
pub struct Args {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    #[command(flatten)]
    store: StoreArg,
    /// Where to listen, on loopback; port 0 picks a free port [default: 127.0.0.1 and the
    /// stage's preferred egress host port]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Append the audit log (one JSON line per decision) to FILE instead of writing it to stderr
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Resolve HOST to ADDR instead of asking DNS, like curl's --resolve; repeat it to give a name
    /// several addresses. The addresses are still checked against the policy
    #[arg(long = "resolve", value_name = "HOST:ADDR")]
    resolve: Vec<Override>,
    /// Open CONNECT tunnels at once; more are answered with 503
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_tunnels)]
    max_tunnels: usize,
    /// Largest request head (request line and headers) in bytes; more is answered with 431
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_header_bytes)]
    max_header_bytes: usize,
    /// Seconds a client has to send a request head
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().header_timeout.as_secs())]
    header_timeout: u64,
    /// Seconds without traffic after which a tunnel is closed
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().idle_timeout.as_secs())]
    idle_timeout: u64,
    /// Seconds after which any tunnel or connection is closed
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().total_timeout.as_secs())]
    total_timeout: u64,
}

pub fn exec(args: Args) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let stage = open_intact_stage(&store, &args.id)?;
    let policy = egress::policy_of(&stage)?;
    if policy.engine != Engine::Builtin {
        return Err(UserError::usage(
            format!(
                "stage {} uses the {:?} egress engine, not the built-in proxy",
                stage.id, policy.engine
            ),
            "`bottle run` starts that engine for the stage; `bottle proxy` runs only the built-in one",
        ));
    }
    let listen = match args.listen {
        Some(addr) => addr,
        None => {
            let port = stage
                .plan
                .sidecars
                .iter()
                .find(|s| s.kind == SidecarKind::Egress)
                .map(|s| s.host_port)
                .context("the stage's plan.json assigns no egress port")?;
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    if !listen.ip().is_loopback() {
        return Err(UserError::usage(
            format!("refusing to listen on {listen}: the egress proxy listens on loopback only"),
            "pass --listen 127.0.0.1:PORT (port 0 picks a free one)",
        ));
    }
    if args.max_header_bytes < MIN_HEADER_BYTES {
        return Err(UserError::usage(
            format!("--max-header-bytes {} is too small", args.max_header_bytes),
            format!("give at least {MIN_HEADER_BYTES}"),
        ));
    }
    if args.max_tunnels == 0 {
        return Err(UserError::usage(
            "--max-tunnels 0 would refuse every HTTPS request",
            "give at least 1",
        ));
    }
    let audit = match &args.log {
        Some(path) => AuditLog::append_to(path)?,
        None => AuditLog::stderr(),
    };
    let limits = Limits {
        max_header_bytes: args.max_header_bytes,
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        total_timeout: Duration::from_secs(args.total_timeout.max(1)),
        max_tunnels: args.max_tunnels,
        max_connections: args.max_tunnels.saturating_add(256),
        ..Limits::default()
    };
    let options = egress::Options {
        limits,
        resolver: Resolver::new(&args.resolve, limits.connect_timeout),
        audit: Arc::new(audit),
    };
    // One thread: a bottle's proxy serves one agent, tunnels move bytes with splice(2), and a
    // single thread wakes once per hop where a work-stealing pool would also wake a second one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the proxy's async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                UserError::usage(
                    format!("cannot listen on {listen}: the port is in use"),
                    "pass --listen 127.0.0.1:0 to pick a free port",
                )
            } else {
                anyhow::Error::new(e).context(format!("failed to listen on {listen}"))
            }
        })?;
        let bound = listener
            .local_addr()
            .context("failed to read the bound address")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{bound}")?;
            out.flush()?;
        }
        output::note(&format!(
            "egress proxy for stage {} on {bound}: {} allowed pattern{}; Ctrl-C stops it",
            stage.id,
            policy.allow.len(),
            if policy.allow.len() == 1 { "" } else { "s" }
        ));
        egress::serve(policy, listener, options, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(Exit::Success)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
