//! Plain-HTTP forwarding: an absolute-form request (`GET http://host/path`) is checked like a
//! tunnel, then sent upstream in origin form over a connection of its own, without hop-by-hop
//! headers, and its body is streamed both ways and counted. Decisions are `decision`'s; the
//! audit record is written when the response body ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use super::decision::HTTP_PORT;
use super::server::{open_upstream, target, Audit, ProxyBody, Shared, Stop};

pub(super) async fn forward(
    shared: &Shared,
    mut audit: Audit,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let uri = request.uri().clone();
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) => authority.clone(),
        (Some("https"), _) => {
            return Stop::refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send https:// requests through a CONNECT tunnel (set HTTPS_PROXY), not as plain HTTP",
            )
            .answer(audit)
        }
        (None, _) => {
            return Stop::refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "this is an egress proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port",
            )
            .answer(audit)
        }
        (Some(other), _) => {
            return Stop::refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the `{other}` scheme is not proxied: only http:// and CONNECT"),
            )
            .answer(audit)
        }
    };
    let (host, port) = match target(&authority, HTTP_PORT) {
        Ok(target) => target,
        Err(stop) => return stop.answer(audit),
    };
    let upstream = match open_upstream(shared, &mut audit, &host, port, HTTP_PORT).await {
        Ok(stream) => stream,
        Err(stop) => return stop.answer(audit),
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(pair) => pair,
            Err(e) => {
                return Stop::failed(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!("{host}:{port}: {e}"),
                )
                .answer(audit)
            }
        };
    // One upstream connection per request: it ends when the response body is done.
    tokio::spawn(conn);

    let counters = Arc::new(Counters::default());
    let (parts, body) = request.into_parts();
    let mut upstream_request = Request::new(CountingBody::new(
        body,
        counters.clone(),
        Direction::Up,
        None,
    ));
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = origin_form(&uri);
    *upstream_request.headers_mut() = end_to_end(&parts.headers);
    // The target's authority without any user information.
    let host_value = match authority.port_u16() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&host_value) {
        upstream_request.headers_mut().insert(HOST, value);
    }
    let answer = tokio::time::timeout(
        shared.limits.idle_timeout,
        sender.send_request(upstream_request),
    );
    let response = match answer.await {
        Ok(Ok(response)) => response,
        Err(_) => {
            audit.record.bytes_up = counters.up.load(Ordering::Relaxed);
            return Stop::failed(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "{host}:{port} sent no answer within {} s",
                    shared.limits.idle_timeout.as_secs()
                ),
            )
            .answer(audit);
        }
        Ok(Err(e)) => {
            audit.record.bytes_up = counters.up.load(Ordering::Relaxed);
            return Stop::failed(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("{host}:{port}: {e}"),
            )
            .answer(audit);
        }
    };
    let (mut parts, body) = response.into_parts();
    parts.headers = end_to_end(&parts.headers);
    audit.mark_allowed(parts.status.as_u16());
    audit.counters = Some(counters.clone());
    let body = CountingBody::new(body, counters, Direction::Down, Some(audit));
    Response::from_parts(parts, body.map_err(Into::into).boxed())
}

/// `http://host/path?q` as sent upstream: `/path?q`.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// The headers a proxy must not pass on: hop-by-hop ones and those `Connection` names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower) || named.iter().any(|n| n == lower) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) up: AtomicU64,
    pub(super) down: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// A body that counts the bytes it passes and, when it is the response, writes the request's
/// audit record once it is finished or dropped (the client went away).
struct CountingBody<B> {
    inner: B,
    counters: Arc<Counters>,
    direction: Direction,
    /// Held only to be dropped with the body, which writes the record.
    _audit: Option<Audit>,
}

impl<B> CountingBody<B> {
    fn new(inner: B, counters: Arc<Counters>, direction: Direction, audit: Option<Audit>) -> Self {
        CountingBody {
            inner,
            counters,
            direction,
            _audit: audit,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let counter = match self.direction {
                    Direction::Up => &self.counters.up,
                    Direction::Down => &self.counters.down,
                };
                counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderName;

    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("accept", "*/*"),
            ("cookie", "a=1"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers.append(
            HeaderName::from_static("cookie"),
            HeaderValue::from_static("b=2"),
        );
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "cookie"]);
        assert_eq!(kept.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let cases = [
            ("http://a.test/x/y?q=1", "/x/y?q=1"),
            ("http://a.test", "/"),
            ("http://a.test:8080/", "/"),
        ];
        for (absolute, origin) in cases {
            let uri: Uri = absolute.parse().unwrap();
            assert_eq!(origin_form(&uri).to_string(), origin, "{absolute}");
        }
    }
}
