//! The egress proxy's server: accepts connections, lets hyper parse HTTP/1, asks `decision` for a
//! verdict, and then tunnels (CONNECT) or forwards (absolute-form HTTP) to the checked address.
//! Every request ends in exactly one audit record. All policy lives in `decision`; this module
//! only carries verdicts out and enforces the limits that keep one client from hurting another.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::audit::{rfc3339, AuditLog, Outcome, Record};
use super::decision::{self, Decision, Host, Refusal, CONNECT_PORT};
use super::forward::{self, Counters};
use super::resolve::Resolver;
use super::tunnel::{self, TunnelEnd, TunnelLimits};
use crate::render::egress::EgressPolicy;

/// Limits against slow, malformed or greedy clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request line and headers together, in bytes; more is answered with 431.
    pub max_header_bytes: usize,
    /// Time to send a whole request head, and to start the next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// No tunnel or plain-HTTP connection lives longer.
    pub total_timeout: Duration,
    /// Time allowed to resolve a name, and again to connect to the upstream.
    pub connect_timeout: Duration,
    /// Open CONNECT tunnels at once; more are answered with 503. Each holds two sockets and, on
    /// Linux while bytes flow, two pipes: mind the open-file limit.
    pub max_tunnels: usize,
    /// Client connections at once (tunnels included); more are answered with 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            total_timeout: Duration::from_secs(6 * 3600),
            connect_timeout: Duration::from_secs(10),
            max_tunnels: 1024,
            max_connections: 1280,
        }
    }
}

/// The smallest header limit hyper accepts for its read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

pub struct Options {
    pub limits: Limits,
    pub resolver: Resolver,
    pub audit: Arc<AuditLog>,
}

pub(super) struct Shared {
    policy: EgressPolicy,
    pub(super) limits: Limits,
    resolver: Resolver,
    audit: Arc<AuditLog>,
    tunnels: Arc<Semaphore>,
}

pub(super) type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves the proxy on `listener` until `shutdown` completes, then closes every connection and
/// tunnel. Errors of single connections are logged, never returned. Raises the process's soft
/// open-file limit to its hard limit first: each tunnel needs up to six descriptors.
pub async fn serve(
    policy: EgressPolicy,
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) {
    let limits = options.limits;
    if let Err(e) = super::sys::raise_open_file_limit() {
        eprintln!("bottle proxy: could not raise the open-file limit ({e}); fewer tunnels may fit");
    }
    let shared = Arc::new(Shared {
        policy,
        limits,
        resolver: options.resolver,
        audit: options.audit,
        tunnels: Arc::new(Semaphore::new(limits.max_tunnels)),
    });
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(connection(shared.clone(), stream, peer, permit));
                    }
                    Err(_) => turn_away(&shared, stream, peer),
                },
                Err(e) => {
                    // Out of file descriptors, usually: wait for connections to close.
                    eprintln!("bottle proxy: failed to accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.shutdown().await;
}

/// Over the connection limit: a fixed 503 (written without waiting) and close.
fn turn_away(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    let line = format!(
        "too many connections to the egress proxy (limit {})",
        shared.limits.max_connections
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}\n",
        line.len() + 1
    );
    let _ = stream.try_write(response.as_bytes());
    let audit = Audit::new(shared, peer, "", SystemTime::now());
    audit.refuse("too_many_connections", &line, Some(503));
}

/// An open tunnel waiting for hyper to hand over the client's socket.
struct PendingTunnel {
    upgrade: hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    audit: Audit,
    _permit: OwnedSemaphorePermit,
}

type TunnelSlot = Arc<Mutex<Option<PendingTunnel>>>;

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let opened = SystemTime::now();
    let slot: TunnelSlot = Arc::new(Mutex::new(None));
    let served = Arc::new(AtomicU64::new(0));
    let service = {
        let shared = shared.clone();
        let slot = slot.clone();
        let served = served.clone();
        service_fn(move |request| {
            served.fetch_add(1, Ordering::Relaxed);
            handle(shared.clone(), slot.clone(), peer, request)
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .max_header_size(shared.limits.max_header_bytes)
        .max_headers(100);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout(shared.limits.total_timeout, conn).await {
        Ok(Ok(())) => {}
        // The header timeout also ends kept-alive connections that sit idle after a request:
        // that is housekeeping, not a refusal, so only a connection that never completed a
        // request head is logged for it.
        Ok(Err(e)) if e.is_timeout() && served.load(Ordering::Relaxed) > 0 => {}
        Ok(Err(e)) => log_protocol_error(&shared, peer, opened, &e),
        Err(_) => {}
    }
    let pending = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(tunnel) = pending {
        run_tunnel(&shared, tunnel).await;
    }
}

/// hyper answered the client itself (431, 400) or gave up on it (header timeout): log why.
fn log_protocol_error(shared: &Shared, peer: SocketAddr, opened: SystemTime, e: &hyper::Error) {
    let (reason, status, line) = if e.is_parse_too_large() {
        (
            "header_too_large",
            Some(431),
            format!(
                "the request head is larger than {} bytes",
                shared.limits.max_header_bytes
            ),
        )
    } else if e.is_parse() {
        ("bad_request", Some(400), format!("malformed request: {e}"))
    } else if e.is_timeout() {
        (
            "header_timeout",
            None,
            format!(
                "the request head did not arrive within {} s",
                shared.limits.header_timeout.as_secs_f32()
            ),
        )
    } else {
        // The client went away mid-request, or the response could not be written: no decision
        // was made, so there is nothing to log.
        return;
    };
    Audit::new(shared, peer, "", opened).refuse(reason, &line, status);
}

async fn run_tunnel(shared: &Shared, tunnel: PendingTunnel) {
    let PendingTunnel {
        upgrade,
        upstream,
        mut audit,
        _permit,
    } = tunnel;
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            return audit.fail(
                "client_gone",
                &format!("the client left before the tunnel opened: {e}"),
                None,
            )
        }
    };
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(_) => {
            return audit.fail(
                "internal",
                "the upgraded connection is not a TCP stream",
                None,
            )
        }
    };
    let limits = TunnelLimits {
        idle: shared.limits.idle_timeout,
        total: shared.limits.total_timeout,
    };
    let transfer = tunnel::pump(parts.io.into_inner(), &parts.read_buf, upstream, limits).await;
    audit.record.bytes_up = transfer.up;
    audit.record.bytes_down = transfer.down;
    let end = match transfer.end {
        TunnelEnd::Closed => None,
        TunnelEnd::IdleTimeout => Some("closed: idle timeout".to_owned()),
        TunnelEnd::TotalTimeout => Some("closed: total timeout".to_owned()),
        TunnelEnd::Error(e) => Some(format!("closed: {e}")),
    };
    audit.record.message = end;
    audit.write();
}

async fn handle(
    shared: Arc<Shared>,
    slot: TunnelSlot,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let audit = Audit::new(&shared, peer, request.method().as_str(), SystemTime::now());
    Ok(if request.method() == Method::CONNECT {
        connect(&shared, slot, audit, request).await
    } else {
        forward::forward(&shared, audit, request).await
    })
}

/// A refused or failed request: the answer to send, and the audit fields.
pub(super) struct Stop {
    status: StatusCode,
    reason: &'static str,
    line: String,
    outcome: Outcome,
}

impl Stop {
    pub(super) fn refused(
        status: StatusCode,
        reason: &'static str,
        line: impl Into<String>,
    ) -> Stop {
        Stop {
            status,
            reason,
            line: line.into(),
            outcome: Outcome::Refused,
        }
    }

    pub(super) fn failed(
        status: StatusCode,
        reason: &'static str,
        line: impl Into<String>,
    ) -> Stop {
        Stop {
            status,
            reason,
            line: line.into(),
            outcome: Outcome::Failed,
        }
    }

    fn policy(refusal: Refusal) -> Stop {
        Stop::refused(StatusCode::FORBIDDEN, refusal.code(), refusal.to_string())
    }

    pub(super) fn answer(self, mut audit: Audit) -> Response<ProxyBody> {
        audit.record.outcome = self.outcome;
        audit.record.reason = Some(self.reason.to_owned());
        audit.record.message = Some(self.line.clone());
        audit.record.status = Some(self.status.as_u16());
        audit.write();
        let verb = match self.outcome {
            Outcome::Refused => "refused",
            _ => "failed",
        };
        text_response(
            self.status,
            self.reason,
            &format!("bottle egress proxy {verb}: {}\n", self.line),
        )
    }
}

fn text_response(status: StatusCode, reason: &str, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // A refused client starts afresh; nothing of a refused exchange is worth keeping alive.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if let Ok(value) = HeaderValue::from_str(reason) {
        headers.insert(HeaderName::from_static("x-bottle-egress"), value);
    }
    response
}

fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// Checks, resolves and connects: the common path of CONNECT and plain HTTP.
pub(super) async fn open_upstream(
    shared: &Shared,
    audit: &mut Audit,
    host: &Host,
    port: u16,
    default_port: u16,
) -> Result<TcpStream, Stop> {
    audit.record.host = host.to_string();
    audit.record.port = Some(port);
    // Unlisted names are refused before any lookup.
    decision::admit(&shared.policy, host, port, default_port).map_err(Stop::policy)?;
    let resolved = shared
        .resolver
        .resolve(host)
        .await
        .map_err(|e| Stop::failed(StatusCode::BAD_GATEWAY, "resolve_failed", e.to_string()))?;
    let addr = match decision::decide(&shared.policy, host, port, default_port, &resolved) {
        Decision::Allow(addr) => addr,
        Decision::Refuse(refusal) => {
            if let Refusal::RestrictedAddress { addr, .. } = &refusal {
                audit.record.address = Some(*addr);
            }
            return Err(Stop::policy(refusal));
        }
    };
    audit.record.address = Some(addr.ip());
    // Connect to the checked address itself: never to the name, which would be looked up again.
    let stream =
        match tokio::time::timeout(shared.limits.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Stop::failed(
                    StatusCode::BAD_GATEWAY,
                    "connect_failed",
                    format!("cannot connect to {host}:{port} at {addr}: {e}"),
                ))
            }
            Err(_) => {
                return Err(Stop::failed(
                    StatusCode::GATEWAY_TIMEOUT,
                    "connect_timeout",
                    format!(
                        "cannot connect to {host}:{port} at {addr}: no answer within {} s",
                        shared.limits.connect_timeout.as_secs_f32()
                    ),
                ))
            }
        };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The host and port a request names, its protocol's default port when it names none.
pub(super) fn target(
    authority: &hyper::http::uri::Authority,
    default_port: u16,
) -> Result<(Host, u16), Stop> {
    let host = Host::parse(authority.host()).ok_or_else(|| {
        Stop::refused(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`{}` is not a host name or IP address", authority.host()),
        )
    })?;
    Ok((host, authority.port_u16().unwrap_or(default_port)))
}

async fn connect(
    shared: &Shared,
    slot: TunnelSlot,
    mut audit: Audit,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = request.uri().authority().cloned() else {
        return Stop::refused(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "CONNECT needs a target as host:port",
        )
        .answer(audit);
    };
    let (host, port) = match target(&authority, CONNECT_PORT) {
        Ok(target) => target,
        Err(stop) => return stop.answer(audit),
    };
    let Ok(permit) = shared.tunnels.clone().try_acquire_owned() else {
        audit.record.host = host.to_string();
        audit.record.port = Some(port);
        return Stop::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_tunnels",
            format!(
                "too many open tunnels (limit {}); close some and retry",
                shared.limits.max_tunnels
            ),
        )
        .answer(audit);
    };
    let upstream = match open_upstream(shared, &mut audit, &host, port, CONNECT_PORT).await {
        Ok(stream) => stream,
        Err(stop) => return stop.answer(audit),
    };
    audit.mark_allowed(200);
    let upgrade = hyper::upgrade::on(&mut request);
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(PendingTunnel {
        upgrade,
        upstream,
        audit,
        _permit: permit,
    });
    Response::new(Empty::new().map_err(|never| match never {}).boxed())
}

/// The audit record of one request, written exactly once: explicitly, or when dropped.
pub(super) struct Audit {
    log: Arc<AuditLog>,
    pub(super) record: Record,
    started: Instant,
    pub(super) counters: Option<Arc<Counters>>,
    written: bool,
}

impl Audit {
    fn new(shared: &Shared, peer: SocketAddr, method: &str, time: SystemTime) -> Audit {
        Audit {
            log: shared.audit.clone(),
            record: Record {
                time: rfc3339(time),
                method: method.to_owned(),
                host: String::new(),
                port: None,
                address: None,
                // What the record says if it is dropped before any decision was recorded.
                outcome: Outcome::Failed,
                reason: Some("abandoned".to_owned()),
                message: Some(
                    "the request ended before the proxy answered it: the client left or the proxy stopped"
                        .to_owned(),
                ),
                status: None,
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                client: Some(peer.to_string()),
            },
            started: Instant::now(),
            counters: None,
            written: false,
        }
    }

    fn refuse(mut self, reason: &str, line: &str, status: Option<u16>) {
        self.record.outcome = Outcome::Refused;
        self.record.reason = Some(reason.to_owned());
        self.record.message = Some(line.to_owned());
        self.record.status = status;
        self.write();
    }

    fn fail(mut self, reason: &str, line: &str, status: Option<u16>) {
        self.record.outcome = Outcome::Failed;
        self.record.reason = Some(reason.to_owned());
        self.record.message = Some(line.to_owned());
        self.record.status = status;
        self.write();
    }

    /// From here on the request counts as allowed, whenever the record is written.
    pub(super) fn mark_allowed(&mut self, status: u16) {
        self.record.outcome = Outcome::Allowed;
        self.record.reason = None;
        self.record.message = None;
        self.record.status = Some(status);
    }

    fn write(&mut self) {
        if self.written {
            return;
        }
        self.written = true;
        if let Some(counters) = &self.counters {
            self.record.bytes_up = counters.up.load(Ordering::Relaxed);
            self.record.bytes_down = counters.down.load(Ordering::Relaxed);
        }
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        self.log.write(&self.record);
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.write();
    }
}
