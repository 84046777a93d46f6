//! The egress proxy against real clients: curl (Debian's) and hyper + rustls, through
//! `bottle proxy` started from the built binary, to upstream servers on 127.0.0.1.

mod client;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bottle::sidecar::egress::audit::Outcome;
use support::{curl, pattern, Proxy, TestEnv, Upstreams, TLS_NAME};

#[test]
fn plain_http_through_curl_passes_byte_for_byte_and_is_logged() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.http.port();
    let id = env.stage(&[&format!("up.test:{port}")], &["127.0.0.1"]);
    let proxy = Proxy::start(&env, &id, &["--resolve", "up.test:127.0.0.1"]);

    let (status, body, err) = curl(
        &proxy,
        &[&format!("http://up.test:{port}/bytes/1000000")],
        None,
    );
    assert_eq!(status, 200, "{err}");
    assert!(
        body == pattern(1_000_000),
        "the body differs from what the upstream sent"
    );

    let upload = env.path("upload.bin");
    fs_err::write(&upload, pattern(300_000)).unwrap();
    let (status, body, err) = curl(
        &proxy,
        &[
            "--data-binary",
            &format!("@{}", upload.display()),
            &format!("http://up.test:{port}/echo"),
        ],
        None,
    );
    assert_eq!(status, 200, "{err}");
    assert!(body == pattern(300_000), "the echoed body differs");

    // The upstream sees origin-form and the target's Host.
    let (status, body, _) = curl(&proxy, &[&format!("http://UP.test:{port}/a/b?c=d")], None);
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("hello from upstream; host UP.test:{port}; path /a/b")
    );

    let get = proxy.wait_for("the GET", |r| {
        r.method == "GET" && r.bytes_down == 1_000_000
    });
    assert_eq!(get.outcome, Outcome::Allowed);
    assert_eq!(get.host, "up.test");
    assert_eq!(get.port, Some(port));
    assert_eq!(get.address, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(get.status, Some(200));
    let post = proxy.wait_for("the POST", |r| r.method == "POST");
    assert_eq!((post.bytes_up, post.bytes_down), (300_000, 300_000));
    assert!(!post.time.is_empty() && post.time.ends_with('Z'));
}

#[test]
fn https_through_connect_with_curl_passes_byte_for_byte() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.https.port();
    let id = env.stage(&[&format!("{TLS_NAME}:{port}")], &["127.0.0.1"]);
    let proxy = Proxy::start(&env, &id, &["--resolve", &format!("{TLS_NAME}:127.0.0.1")]);

    let url = format!("https://{TLS_NAME}:{port}/bytes/2000000");
    let (status, body, err) = curl(&proxy, &[&url], Some(&up.ca_pem));
    assert_eq!(status, 200, "{err}");
    assert!(
        body == pattern(2_000_000),
        "the body differs from what the upstream sent"
    );

    let record = proxy.wait_for("the tunnel", |r| r.method == "CONNECT");
    assert_eq!(record.outcome, Outcome::Allowed);
    assert_eq!(record.host, TLS_NAME);
    assert_eq!(record.port, Some(port));
    assert_eq!(record.status, Some(200));
    // TLS adds records and a handshake on top of the body.
    assert!(record.bytes_down > 2_000_000, "{record:?}");
    assert!(record.bytes_up > 0, "{record:?}");
}

#[test]
fn rust_client_through_plain_http_and_connect() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let id = env.stage(
        &[
            &format!("plain.test:{}", up.http.port()),
            &format!("{TLS_NAME}:{}", up.https.port()),
        ],
        &["127.0.0.1"],
    );
    let proxy = Proxy::start(
        &env,
        &id,
        &[
            "--resolve",
            "plain.test:127.0.0.1",
            "--resolve",
            &format!("{TLS_NAME}:127.0.0.1"),
        ],
    );
    up.runtime.block_on(async {
        let url = format!("http://plain.test:{}/bytes/500000", up.http.port());
        let (status, body) = client::get_plain(proxy.addr, &url).await;
        assert_eq!(status, 200);
        assert!(body[..] == pattern(500_000)[..]);
        let (status, body) = client::get_tls(
            proxy.addr,
            TLS_NAME,
            up.https.port(),
            "/bytes/700000",
            &up.ca_der,
        )
        .await;
        assert_eq!(status, 200);
        assert!(body[..] == pattern(700_000)[..]);
    });
}

#[test]
fn a_wildcard_matches_names_below_it_but_not_itself() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.http.port();
    let id = env.stage(&[&format!("*.wild.test:{port}")], &["127.0.0.1"]);
    let resolve: Vec<String> = ["wild.test", "a.wild.test", "b.a.wild.test"]
        .iter()
        .flat_map(|h| ["--resolve".to_owned(), format!("{h}:127.0.0.1")])
        .collect();
    let resolve: Vec<&str> = resolve.iter().map(String::as_str).collect();
    let proxy = Proxy::start(&env, &id, &resolve);
    for allowed in ["a.wild.test", "b.a.wild.test"] {
        let (status, _, err) = curl(&proxy, &[&format!("http://{allowed}:{port}/")], None);
        assert_eq!(status, 200, "{allowed}: {err}");
    }
    let (status, body, _) = curl(&proxy, &[&format!("http://wild.test:{port}/")], None);
    assert_eq!(status, 403);
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("wild.test") && body.contains("not on this bottle's egress allow list"),
        "{body}"
    );
    let record = proxy.wait_for("the apex", |r| r.host == "wild.test");
    assert_eq!(record.reason.as_deref(), Some("not_listed"));
}

#[test]
fn the_help_says_a_wildcard_does_not_match_its_apex() {
    let env = TestEnv::new();
    let out = env.bottle(&["proxy", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("`*.example.com` matches every name below")
            && help.contains("NOT example.com itself"),
        "{help}"
    );
}

/// Each refusal of the policy, as curl sees it and as the log records it.
#[test]
fn each_policy_refusal_is_answered_with_its_reason_and_logged() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.http.port();
    let listed = |h: &str| format!("{h}:{port}");
    let id = env.stage(
        &[
            &listed("up.test"),
            &listed("private.test"),
            &listed("meta.test"),
            &listed("mixed.test"),
            &listed("cgnat.test"),
            &listed("v6local.test"),
            &listed("mapped.test"),
            &listed("nodns.test"),
        ],
        // Opens loopback, so only the other classes are left to refuse.
        &["127.0.0.1"],
    );
    // In a namespace of its own: these names point at private and metadata addresses.
    let proxy = Proxy::start_isolated(
        &env,
        &id,
        &[
            "--resolve",
            "up.test:127.0.0.1",
            "--resolve",
            "private.test:10.11.12.13",
            "--resolve",
            "meta.test:169.254.169.254",
            "--resolve",
            "mixed.test:127.0.0.1",
            "--resolve",
            "mixed.test:192.168.1.20",
            "--resolve",
            "cgnat.test:100.64.1.1",
            "--resolve",
            "v6local.test:[fd00:ec2::254]",
            "--resolve",
            "mapped.test:[::ffff:10.0.0.1]",
        ],
    );
    let cases: &[(&str, &str)] = &[
        ("http://other.test:{port}/", "other.test:{port} is not on"),
        ("http://up.test:1/", "up.test:1 is not on"),
        ("http://127.0.0.1:{port}/", "IP address 127.0.0.1"),
        ("http://[::1]:{port}/", "IP address [::1]"),
        (
            "http://private.test:{port}/",
            "10.11.12.13, a private (RFC 1918) address",
        ),
        ("http://meta.test:{port}/", "the cloud metadata address"),
        ("http://mixed.test:{port}/", "192.168.1.20"),
        ("http://cgnat.test:{port}/", "carrier-grade NAT"),
        ("http://v6local.test:{port}/", "the cloud metadata address"),
        ("http://mapped.test:{port}/", "a private (RFC 1918) address"),
    ];
    for (url, want_text) in cases {
        let url = url.replace("{port}", &port.to_string());
        let want_text = want_text.replace("{port}", &port.to_string());
        let (status, body, err) = curl(&proxy, &[&url], None);
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, 403, "{url}: {body}{err}");
        assert!(body.contains(&want_text), "{url}: {body}");
        assert_eq!(
            body.lines().count(),
            1,
            "{url}: the reason is one line: {body}"
        );
    }
    let records = proxy.records();
    let reasons: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r.host.as_str(), r.reason.as_deref()))
        .collect();
    for (host, reason) in [
        ("other.test", "not_listed"),
        ("up.test", "not_listed"),
        ("127.0.0.1", "ip_literal"),
        ("[::1]", "ip_literal"),
        ("private.test", "restricted_address"),
        ("meta.test", "restricted_address"),
        ("mixed.test", "restricted_address"),
        ("cgnat.test", "restricted_address"),
        ("v6local.test", "restricted_address"),
        ("mapped.test", "restricted_address"),
    ] {
        assert!(
            reasons.contains(&(host, Some(reason))),
            "{host} {reason}: {reasons:?}"
        );
    }
    assert!(records
        .iter()
        .all(|r| r.outcome == Outcome::Refused && r.bytes_down == 0));
    let private = records.iter().find(|r| r.host == "private.test").unwrap();
    assert_eq!(private.address, Some("10.11.12.13".parse().unwrap()));

    // Listed but not mapped: the system resolver is asked, and in this namespace, which has no
    // way off the machine, it cannot answer.
    let (status, body, err) = curl(&proxy, &[&format!("http://nodns.test:{port}/")], None);
    assert_eq!(status, 502, "{}{err}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("cannot resolve nodns.test"));
    let record = proxy.wait_for("the failed lookup", |r| r.host == "nodns.test");
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(record.reason.as_deref(), Some("resolve_failed"));
}

/// The SSRF guard: a listed name that resolves to loopback is refused until `allow_addresses`
/// opens loopback, over CONNECT as over plain HTTP.
#[test]
fn a_listed_name_on_a_private_address_is_refused_unless_its_range_is_opened() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.https.port();
    let target = format!("{TLS_NAME}:{port}");
    let closed = env.stage(&[&target], &[]);
    let opened = env.stage(&[&target], &["127.0.0.0/8"]);
    assert_ne!(closed, opened);
    let resolve = ["--resolve", &format!("{TLS_NAME}:127.0.0.1")];
    let refusing = Proxy::start(&env, &closed, &resolve);
    let allowing = Proxy::start(&env, &opened, &resolve);
    up.runtime.block_on(async {
        let refused = client::connect(refusing.addr, &target)
            .await
            .expect_err("refused");
        assert_eq!(refused.0, 403);
        let text = String::from_utf8(refused.1.to_vec()).unwrap();
        assert!(
            text.contains("resolves to 127.0.0.1, a loopback address"),
            "{text}"
        );
        let (status, body) =
            client::get_tls(allowing.addr, TLS_NAME, port, "/bytes/10", &up.ca_der).await;
        assert_eq!(status, 200);
        assert!(body[..] == pattern(10)[..]);
    });
    let record = refusing.wait_for("the refusal", |r| r.method == "CONNECT");
    assert_eq!(record.reason.as_deref(), Some("restricted_address"));
    assert_eq!(record.address, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(record.status, Some(403));
    allowing.wait_for("the tunnel", |r| {
        r.method == "CONNECT" && r.outcome == Outcome::Allowed
    });
}

#[test]
fn protocol_errors_and_limits_are_answered_and_logged() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.https.port();
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let id = env.stage(
        &[
            &format!("{TLS_NAME}:{port}"),
            &format!("dead.test:{dead_port}"),
            &format!("hang.test:{}", up.http.port()),
        ],
        &["127.0.0.1"],
    );
    let proxy = Proxy::start(
        &env,
        &id,
        &[
            "--resolve",
            &format!("{TLS_NAME}:127.0.0.1"),
            "--resolve",
            "dead.test:127.0.0.1",
            "--resolve",
            "hang.test:127.0.0.1",
            "--max-tunnels",
            "1",
            "--max-header-bytes",
            "8192",
            "--idle-timeout",
            "1",
        ],
    );
    // Origin-form is for servers, not proxies.
    let reply = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("absolute-form"), "{reply}");
    // https:// in plain HTTP would be sent in clear text.
    let reply = raw_exchange(
        proxy.addr,
        b"GET https://secure.test/ HTTP/1.1\r\nHost: secure.test\r\n\r\n",
    );
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("CONNECT"),
        "{reply}"
    );
    // Garbage.
    let reply = raw_exchange(proxy.addr, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // A head over the limit.
    let huge = format!(
        "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let reply = raw_exchange(proxy.addr, huge.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // Listed, checked, but nothing listens there.
    let (status, body, _) = curl(&proxy, &[&format!("http://dead.test:{dead_port}/")], None);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));

    // Listed and reached, but it never answers: 504 after the idle timeout, not a hang.
    let started = Instant::now();
    let (status, body, _) = curl(
        &proxy,
        &[&format!("http://hang.test:{}/hang", up.http.port())],
        None,
    );
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(10));

    // One tunnel at most: the second is turned away while the first is open.
    up.runtime.block_on(async {
        let target = format!("{TLS_NAME}:{port}");
        let first = client::connect(proxy.addr, &target)
            .await
            .expect("the first tunnel opens");
        let second = client::connect(proxy.addr, &target)
            .await
            .expect_err("the second is refused");
        assert_eq!(second.0, 503);
        assert!(String::from_utf8_lossy(&second.1).contains("too many open tunnels (limit 1)"));
        drop(first);
    });

    for (reason, status) in [
        ("bad_request", Some(400)),
        ("header_too_large", Some(431)),
        ("connect_failed", Some(502)),
        ("upstream_timeout", Some(504)),
        ("too_many_tunnels", Some(503)),
    ] {
        let r = proxy.wait_for(reason, |r| r.reason.as_deref() == Some(reason));
        assert_eq!(r.status, status, "{r:?}");
        assert_ne!(r.outcome, Outcome::Allowed);
    }
}

/// A slow client, a malformed one and one with a huge head, all at once, while a good client
/// makes its requests: the good client is served promptly and the bad ones get their errors.
#[test]
fn bad_clients_do_not_stall_a_good_one() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.http.port();
    let id = env.stage(&[&format!("up.test:{port}")], &["127.0.0.1"]);
    let proxy = Proxy::start(
        &env,
        &id,
        &["--resolve", "up.test:127.0.0.1", "--header-timeout", "2"],
    );
    let addr = proxy.addr;
    let slow = std::thread::spawn(move || {
        // One byte every 100 ms: a head that would take far longer than the timeout.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        for b in b"GET http://up.test/ HTTP/1.1\r\nHost: up.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        started.elapsed()
    });
    let stallers: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    raw_exchange(addr, b"BLAH BLAH BLAH\r\n\r\n")
                } else {
                    let huge = format!(
                        "GET http://up.test/ HTTP/1.1\r\nX: {}\r\n\r\n",
                        "b".repeat(64_000)
                    );
                    raw_exchange(addr, huge.as_bytes())
                }
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..10 {
        let (status, body, err) = curl(
            &proxy,
            &[&format!("http://up.test:{port}/bytes/100000")],
            None,
        );
        assert_eq!(status, 200, "{err}");
        assert!(body == pattern(100_000));
    }
    let good = started.elapsed();
    for s in stallers {
        let reply = s.join().unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 400") || reply.starts_with("HTTP/1.1 431"),
            "{reply}"
        );
    }
    let slow_for = slow.join().unwrap();
    assert!(
        good < Duration::from_secs(5),
        "the good client took {good:?}"
    );
    assert!(
        slow_for < Duration::from_secs(5),
        "the slow client was cut off after {slow_for:?}, not at the 2 s header timeout"
    );
    proxy.wait_for("the header timeout", |r| {
        r.reason.as_deref() == Some("header_timeout")
    });
}

/// The header timeout also closes kept-alive connections left idle after a request; that is
/// housekeeping, and the log must not call it a refusal.
#[test]
fn an_idle_kept_alive_connection_is_closed_without_a_refusal() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.http.port();
    let id = env.stage(&[&format!("up.test:{port}")], &["127.0.0.1"]);
    let proxy = Proxy::start(
        &env,
        &id,
        &["--resolve", "up.test:127.0.0.1", "--header-timeout", "1"],
    );
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET http://up.test:{port}/bytes/5 HTTP/1.1\r\nHost: up.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    // The answer, then the close one header timeout later.
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.wait_for("the request", |r| r.method == "GET");
    std::thread::sleep(Duration::from_millis(200));
    let records = proxy.records();
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].outcome, Outcome::Allowed);
}

/// `bottle run` stops its sidecars with SIGTERM: the proxy exits 0.
#[test]
fn the_proxy_stops_cleanly_on_sigterm() {
    let env = TestEnv::new();
    let id = env.stage(&["a.test"], &[]);
    let mut proxy = Proxy::start(&env, &id, &[]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = proxy.try_wait() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not stop within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bottle_egress_summarises_the_log_per_host() {
    let env = TestEnv::new();
    let up = Upstreams::start(&env);
    let port = up.http.port();
    let id = env.stage(&[&format!("up.test:{port}")], &["127.0.0.1"]);
    let proxy = Proxy::start(&env, &id, &["--resolve", "up.test:127.0.0.1"]);
    for _ in 0..2 {
        assert_eq!(
            curl(
                &proxy,
                &[&format!("http://up.test:{port}/bytes/2048")],
                None
            )
            .0,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            curl(&proxy, &[&format!("http://nope.test:{port}/")], None).0,
            403
        );
    }
    proxy.wait_for("the refusals", |r| r.host == "nope.test");
    proxy.wait_for("the requests", |r| r.bytes_down == 2048);
    let log = proxy.log.to_str().unwrap().to_owned();
    drop(proxy);

    let out = env.bottle(&["egress", &id[..8], "--log", &log]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let line = |host: &str| {
        table
            .lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no line for {host}:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line(&format!("up.test:{port}")),
        [
            &format!("up.test:{port}"),
            "HTTP",
            "2",
            "0",
            "0",
            "0",
            "B",
            "4.0",
            "KiB",
            "yes"
        ]
    );
    assert_eq!(
        line(&format!("nope.test:{port}")),
        [
            &format!("nope.test:{port}"),
            "HTTP",
            "0",
            "3",
            "0",
            "0",
            "B",
            "0",
            "B",
            "no"
        ]
    );
    let hint = String::from_utf8(out.stderr).unwrap();
    assert!(hint.contains("add it to egress.allow"), "{hint}");

    let out = env.bottle(&["egress", &id, "--log", &log, "--denied", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{json}");
    assert_eq!(hosts[0]["host"], "nope.test");
    assert_eq!(hosts[0]["refused"], 3);
    assert_eq!(hosts[0]["reasons"]["not_listed"], 3);
    assert_eq!(hosts[0]["listed"], false);

    let out = env.bottle(&[
        "egress",
        &id,
        "--log",
        &env.path("missing.jsonl").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no egress log at"));
}

#[test]
fn the_proxy_listens_on_loopback_only() {
    let env = TestEnv::new();
    let id = env.stage(&["a.test"], &[]);
    let out = env.bottle(&["proxy", &id, "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("loopback only") && err.contains("--listen 127.0.0.1:PORT"),
        "{err}"
    );
}

/// Writes `request`, then reads until the proxy closes the connection (it closes after every
/// error it answers) or 10 s pass.
fn raw_exchange(proxy: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}
