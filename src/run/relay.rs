//! Byte relays: the bridges (a unix socket in the run directory to a sidecar's host loopback
//! port, in the runner) and the guard's relays (127.0.0.1:<guest port> inside gvproxy's empty
//! network namespace to a bridge socket). Each accepted connection is joined to one new
//! connection to its single fixed target; a relay never chooses where to connect.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream that can be split into two directions.
pub trait Duplex: Read + Write + Send + Sized + 'static {
    fn split(&self) -> io::Result<Self>;
    fn shutdown_write(&self);
}

impl Duplex for TcpStream {
    fn split(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Duplex for UnixStream {
    fn split(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Copies both ways until both sides have finished, each on its own thread.
pub fn join<A: Duplex, B: Duplex>(a: A, b: B) -> io::Result<()> {
    let (a2, b2) = (a.split()?, b.split()?);
    thread::spawn(move || copy_then_close(a, b2));
    thread::spawn(move || copy_then_close(b, a2));
    Ok(())
}

fn copy_then_close<R: Duplex, W: Duplex>(mut from: R, mut to: W) {
    let _ = io::copy(&mut from, &mut to);
    to.shutdown_write();
}

/// A bridge: listens on `socket` and joins each connection to 127.0.0.1:`port` on the host.
pub struct Bridge {
    pub socket: PathBuf,
    pub port: u16,
}

impl Bridge {
    pub fn start(socket: &Path, port: u16) -> anyhow::Result<Bridge> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).with_context(|| {
            format!(
                "failed to listen on the bridge socket `{}`",
                socket.display()
            )
        })?;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(inner) = incoming else { continue };
                // A sidecar that is not listening closes the guest's connection: nothing else.
                if let Ok(outer) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                    let _ = outer.set_nodelay(true);
                    let _ = join(inner, outer);
                }
            }
        });
        Ok(Bridge {
            socket: socket.to_owned(),
            port,
        })
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A relay of the guard: listens on 127.0.0.1:`port` (in the guard's namespace) and joins each
/// connection to the bridge socket `target`.
pub fn start_guard_relay(port: u16, target: PathBuf) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| {
        format!("failed to listen on 127.0.0.1:{port} in the guard's namespace")
    })?;
    thread::spawn(move || {
        for incoming in listener.incoming() {
            let Ok(inner) = incoming else { continue };
            let _ = inner.set_nodelay(true);
            if let Ok(outer) = UnixStream::connect(&target) {
                let _ = join(inner, outer);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_carries_bytes_both_ways_and_half_closes() {
        let dir = tempfile::tempdir().unwrap();
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(&[b"echo:".as_slice(), &got].concat())
                .unwrap();
        });
        let socket = dir.path().join("b.sock");
        let bridge = Bridge::start(&socket, port).unwrap();
        let mut client = UnixStream::connect(&socket).unwrap();
        client.write_all(b"hello").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "echo:hello");
        bridge.remove();
        assert!(!socket.exists());
    }

    #[test]
    fn a_bridge_to_a_closed_port_closes_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let socket = dir.path().join("b.sock");
        let _bridge = Bridge::start(&socket, port).unwrap();
        let mut client = UnixStream::connect(&socket).unwrap();
        let mut reply = Vec::new();
        // EOF or a reset: either way, nothing comes back.
        let _ = client.read_to_end(&mut reply);
        assert!(reply.is_empty());
    }
}
