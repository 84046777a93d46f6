//! The byte pump of an open CONNECT tunnel: both directions at once, bounded by an idle timeout
//! (no byte either way) and a total timeout, counting bytes each way. It never looks at the bytes.
//! Buffers are taken only while data flows and given back when a socket runs dry, so an idle
//! tunnel holds two sockets and a small task, not buffers.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Large enough for loopback's 64 KiB segments; only held while a direction is busy.
const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    pub idle: Duration,
    pub total: Duration,
}

#[derive(Debug)]
pub enum TunnelEnd {
    /// Both sides closed (or one side closed and the other followed).
    Closed,
    IdleTimeout,
    TotalTimeout,
    Error(io::Error),
}

#[derive(Debug)]
pub struct Transfer {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
    pub end: TunnelEnd,
}

/// When anything last moved, as milliseconds since the tunnel opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Copies `client` <-> `upstream` until both are done or a limit is hit. `client_early` are bytes
/// the client sent after its CONNECT request that the HTTP layer had already read.
pub async fn pump(
    client: TcpStream,
    client_early: &[u8],
    upstream: TcpStream,
    limits: TunnelLimits,
) -> Transfer {
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let activity = Activity {
        opened: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (client_read, client_write) = client.into_split();
    let (upstream_read, mut upstream_write) = upstream.into_split();
    let work = async {
        if !client_early.is_empty() {
            upstream_write.write_all(client_early).await?;
            up.fetch_add(client_early.len() as u64, Ordering::Relaxed);
        }
        tokio::try_join!(
            copy(client_read, upstream_write, &up, &activity, limits.idle),
            copy(upstream_read, client_write, &down, &activity, limits.idle),
        )
    };
    let end = match tokio::time::timeout(limits.total, work).await {
        Ok(Ok(_)) => TunnelEnd::Closed,
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => TunnelEnd::IdleTimeout,
        Ok(Err(e)) => TunnelEnd::Error(e),
        Err(_) => TunnelEnd::TotalTimeout,
    };
    Transfer {
        up: up.into_inner(),
        down: down.into_inner(),
        end,
    }
}

/// One direction. On end of file it half-closes the writer and returns, leaving the other
/// direction running (a client may finish sending and still wait for its answer).
async fn copy(
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    count: &AtomicU64,
    activity: &Activity,
    idle: Duration,
) -> io::Result<()> {
    loop {
        within_idle(reader.readable(), activity, idle).await?;
        // Not zeroed: `try_read_buf` fills the spare capacity and says how much it wrote.
        let mut buffer = Vec::with_capacity(BUFFER_BYTES);
        loop {
            buffer.clear();
            let n = match reader.try_read_buf(&mut buffer) {
                Ok(n) => n,
                // Ran dry: give the buffer back and wait for the next readiness.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // The peer may already be gone; its own direction reports that.
                let _ = writer.shutdown().await;
                return Ok(());
            }
            activity.touch();
            within_idle(writer.write_all(&buffer[..n]), activity, idle).await?;
            count.fetch_add(n as u64, Ordering::Relaxed);
            activity.touch();
        }
    }
}

/// Runs `op` until it finishes or nothing has moved in either direction for `idle`.
async fn within_idle<T>(
    op: impl Future<Output = io::Result<T>>,
    activity: &Activity,
    idle: Duration,
) -> io::Result<T> {
    tokio::pin!(op);
    loop {
        let deadline = activity.idle_deadline(idle);
        match tokio::time::timeout_at(deadline, &mut op).await {
            Ok(result) => return result,
            // The other direction may have moved meanwhile, pushing the deadline back.
            Err(_) if activity.idle_deadline(idle) <= Instant::now() => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no traffic for {} s", idle.as_secs()),
                ))
            }
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Two ends of one loopback connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn limits(idle_ms: u64) -> TunnelLimits {
        TunnelLimits {
            idle: Duration::from_millis(idle_ms),
            total: Duration::from_secs(20),
        }
    }

    #[tokio::test]
    async fn copies_both_ways_with_early_bytes_first_and_counts_them() {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut upstream) = pair().await;
        let pump =
            tokio::spawn(
                async move { pump(client_side, b"early ", upstream_side, limits(5000)).await },
            );
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"early hello");
        upstream.write_all(b"world!!").await.unwrap();
        drop(upstream);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!!");
        let transfer = pump.await.unwrap();
        assert_eq!((transfer.up, transfer.down), (11, 7));
        assert!(
            matches!(transfer.end, TunnelEnd::Closed),
            "{:?}",
            transfer.end
        );
    }

    #[tokio::test]
    async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
        let (_client, client_side) = pair().await;
        let (upstream_side, _upstream) = pair().await;
        let started = Instant::now();
        let transfer = pump(client_side, b"", upstream_side, limits(200)).await;
        assert!(
            matches!(transfer.end, TunnelEnd::IdleTimeout),
            "{:?}",
            transfer.end
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn traffic_one_way_keeps_the_tunnel_open() {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut upstream) = pair().await;
        let pump =
            tokio::spawn(async move { pump(client_side, b"", upstream_side, limits(300)).await });
        // The client never writes; the upstream trickles for 1.2 s, four idle periods.
        for _ in 0..12 {
            upstream.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut got = [0u8; 12];
        client.read_exact(&mut got).await.unwrap();
        let transfer = pump.await.unwrap();
        assert_eq!(transfer.down, 12);
        assert!(
            matches!(transfer.end, TunnelEnd::IdleTimeout),
            "{:?}",
            transfer.end
        );
    }
}
