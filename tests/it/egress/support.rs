//! Test helpers: a temporary store with stages, `bottle proxy` started from the built binary on
//! 127.0.0.1:0, and upstream servers (plain HTTP and TLS with a fresh CA) on loopback. All traffic
//! stays on 127.0.0.1; every name the proxy may resolve is mapped with `--resolve`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottle::sidecar::egress::audit::Record;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

pub const BIN: &str = env!("CARGO_BIN_EXE_bottle");

/// A temporary directory with a stage store.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self) -> PathBuf {
        self.path("stages")
    }

    pub fn bottle(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BOTTLE_STORE", self.store())
            .output()
            .expect("bottle runs")
    }

    /// Generates a stage whose egress policy is `allow` and `allow_addresses`; returns its id.
    pub fn stage(&self, allow: &[&str], allow_addresses: &[&str]) -> String {
        let list = |items: &[&str]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let manifest = format!(
            "[agents.a]\nbottle = \"b\"\ncommand = [\"sh\"]\n\n[bottles.b]\nimage = \"docker.io/library/alpine:3.20\"\negress = {{ allow = [{}], allow_addresses = [{}] }}\n",
            list(allow),
            list(allow_addresses)
        );
        let path = self.path(&format!(
            "bottle-{}.toml",
            blake3::hash(manifest.as_bytes()).to_hex()
        ));
        fs_err::write(&path, manifest).unwrap();
        let out = self.bottle(&["gen", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "bottle gen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// A running `bottle proxy`, killed when dropped.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// Set when the proxy runs in a network namespace of its own (see `start_isolated`).
    pub netns_pid: Option<u32>,
}

impl Proxy {
    pub fn start(env: &TestEnv, id: &str, extra: &[&str]) -> Proxy {
        Proxy::spawn(env, id, extra, false)
    }

    /// Starts the proxy in a new network namespace that has only loopback (needs root, `unshare`
    /// and `ip`), for tests that map names to private or metadata addresses: even a proxy that
    /// wrongly connected could reach nothing off this machine. Clients join it with `nsenter`.
    pub fn start_isolated(env: &TestEnv, id: &str, extra: &[&str]) -> Proxy {
        Proxy::spawn(env, id, extra, true)
    }

    fn spawn(env: &TestEnv, id: &str, extra: &[&str], isolated: bool) -> Proxy {
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = env.path(&format!("egress-{n}.jsonl"));
        let mut command = if isolated {
            let mut c = Command::new("unshare");
            // unshare and sh exec in place, so the child's pid is the proxy's.
            c.args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
                BIN,
            ]);
            c
        } else {
            Command::new(BIN)
        };
        let mut child = command
            .args(["proxy", id, "--listen", "127.0.0.1:0", "--log"])
            .arg(&log)
            .args(extra)
            .env("BOTTLE_STORE", env.store())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bottle proxy starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = match line.trim().parse() {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "bottle proxy printed {line:?}, not an address; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }
        };
        let netns_pid = isolated.then(|| child.id());
        Proxy {
            child,
            addr,
            log,
            netns_pid,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The audit records so far.
    pub fn records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    }

    /// Waits until a record satisfies `pred` (records of tunnels are written when they close).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Record) -> bool) -> Record {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "no audit record for {what}; the log has:\n{:#?}",
                    self.records()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` bytes that differ from position to position, so that a reordered or shifted byte shows.
pub fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// What the test upstreams answer: `/bytes/N` gives `pattern(N)`, `POST /echo` its body, `/hang`
/// answers after 30 s, and anything else `hello from upstream`.
async fn upstream_service(
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        return Ok(Response::new(Full::new(Bytes::from(pattern(n)))));
    }
    if path == "/hang" {
        // An upstream that accepts the request and never answers in time.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    if path == "/echo" {
        let body = request.into_body().collect().await?.to_bytes();
        return Ok(Response::new(Full::new(body)));
    }
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello from upstream; host {host}; path {path}"
    )))))
}

/// Plain HTTP and HTTPS upstreams on 127.0.0.1, on their own runtime.
pub struct Upstreams {
    pub runtime: tokio::runtime::Runtime,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The CA that signed the HTTPS server's certificate for `secure.test`, as PEM.
    pub ca_pem: PathBuf,
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
}

pub const TLS_NAME: &str = "secure.test";

impl Upstreams {
    pub fn start(env: &TestEnv) -> Upstreams {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (ca_pem_text, ca_der, server_config) = tls_material();
        let ca_pem = env.path("ca.pem");
        fs_err::write(&ca_pem, ca_pem_text).unwrap();
        let (http, https) = runtime.block_on(async {
            let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addrs = (http.local_addr().unwrap(), https.local_addr().unwrap());
            tokio::spawn(serve_plain(http));
            tokio::spawn(serve_tls(https, Arc::new(server_config)));
            addrs
        });
        Upstreams {
            runtime,
            http,
            https,
            ca_pem,
            ca_der,
        }
    }
}

async fn serve_plain(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(upstream_service),
                )
                .await;
        });
    }
}

async fn serve_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    TokioIo::new(tls),
                    hyper::service::service_fn(upstream_service),
                )
                .await;
        });
    }
}

/// A fresh CA and a certificate for `secure.test` signed by it.
fn tls_material() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::ServerConfig,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bottle test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![TLS_NAME.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .unwrap();
    (ca.pem(), ca.der().clone(), config)
}

/// curl through the proxy, with no proxy settings from the environment. Returns (status, body).
pub fn curl(proxy: &Proxy, args: &[&str], ca: Option<&Path>) -> (u16, Vec<u8>, String) {
    let mut command = match proxy.netns_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net"))
                .args(["--", "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    command
        .args([
            "-sS",
            "--max-time",
            "20",
            "-x",
            &proxy.url(),
            "-w",
            "\n%{http_code}",
        ])
        .args(args);
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "no_proxy",
        "NO_PROXY",
    ] {
        command.env_remove(var);
    }
    let out = command.output().expect("curl runs (Debian package `curl`)");
    let mut stdout = out.stdout;
    let split = stdout
        .iter()
        .rposition(|b| *b == b'\n')
        .expect("curl wrote the status line");
    let status: u16 = String::from_utf8_lossy(&stdout[split + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    stdout.truncate(split);
    (
        status,
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
