//! A Rust HTTP client through the proxy: hyper's client connection for plain HTTP and CONNECT, and
//! rustls for TLS inside the tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// GET an absolute-form `url` through the proxy.
pub async fn get_plain(proxy: SocketAddr, url: &str) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let uri: hyper::Uri = url.parse().unwrap();
    let request = Request::get(uri.clone())
        .header(hyper::header::HOST, uri.authority().unwrap().as_str())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Opens a CONNECT tunnel to `target` (host:port). On a refusal, returns the status and body.
pub async fn connect(
    proxy: SocketAddr,
    target: &str,
) -> Result<hyper::upgrade::Upgraded, (StatusCode, Bytes)> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header(hyper::header::HOST, target)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    if response.status() != StatusCode::OK {
        let status = response.status();
        return Err((
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        ));
    }
    Ok(hyper::upgrade::on(response).await.unwrap())
}

/// GET `https://{tls_name}:{port}{path}` through a CONNECT tunnel, trusting only `ca`.
pub async fn get_tls(
    proxy: SocketAddr,
    tls_name: &str,
    port: u16,
    path: &str,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> (StatusCode, Bytes) {
    let tunnel = connect(proxy, &format!("{tls_name}:{port}"))
        .await
        .unwrap_or_else(|(status, body)| panic!("CONNECT refused: {status} {body:?}"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(tls_name.to_owned()).unwrap(),
            TokioIo::new(tunnel),
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, format!("{tls_name}:{port}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}
