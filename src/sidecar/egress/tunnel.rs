//! The byte pump of an open CONNECT tunnel: both directions at once, bounded by an idle timeout
//! (no byte either way) and a total timeout, counting bytes each way. It never looks at the bytes.
//! On Linux they move socket to pipe to socket with splice(2), never through user memory, in a
//! pipe that exists only while bytes flow; elsewhere (or without a pipe) through one scratch
//! buffer per thread, holding only what a slow reader cannot take yet. So an idle tunnel holds
//! two sockets and a small task, never a buffer.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[cfg(target_os = "linux")]
use super::sys;

/// Large enough for several of loopback's 64 KiB segments per read.
const SCRATCH_BYTES: usize = 256 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

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
    let copies = async {
        if !client_early.is_empty() {
            upstream_write.write_all(client_early).await?;
            up.fetch_add(client_early.len() as u64, Ordering::Relaxed);
        }
        tokio::try_join!(
            copy(client_read, upstream_write, &up, &activity),
            copy(upstream_read, client_write, &down, &activity),
        )?;
        Ok(())
    };
    // One timer for the whole tunnel rather than one per read and write.
    let watchdog = async {
        loop {
            tokio::time::sleep_until(activity.idle_deadline(limits.idle)).await;
            if activity.idle_deadline(limits.idle) <= Instant::now() {
                return;
            }
        }
    };
    let bounded = async {
        tokio::select! {
            result = copies => result,
            () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, "idle")),
        }
    };
    let end = match tokio::time::timeout(limits.total, bounded).await {
        Ok(Ok(())) => TunnelEnd::Closed,
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

/// Reads per pass: 4 MiB at most before the task lets others run.
const PASS_READS: usize = 16;

/// What one pass over a readable socket left to do.
enum Pass {
    /// Read until the socket had no more (or the pass ended); all of it was written.
    Drained,
    /// The reader closed.
    Eof,
    /// The writer could not take these bytes yet.
    Backlog(Vec<u8>),
}

/// One direction. On end of file it half-closes the writer and returns, leaving the other
/// direction running (a client may finish sending and still wait for its answer). On Linux the
/// bytes go through a kernel pipe made when the first byte arrives; elsewhere, or when no pipe
/// can be had, through the scratch buffer.
async fn copy(
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    count: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        splice_copy(reader, writer, count, activity).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        scratch_copy(reader, writer, count, activity).await
    }
}

/// Wanted capacity of a tunnel direction's pipe. Larger pipes move more per call, but count
/// against the per-user pipe budget (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default).
#[cfg(target_os = "linux")]
const PIPE_BYTES: usize = 256 * 1024;

/// A pipe that has carried nothing for this long is closed: it costs two descriptors and
/// kernel memory, and making a new one takes two system calls.
#[cfg(target_os = "linux")]
const PIPE_IDLE: Duration = Duration::from_secs(1);

#[cfg(target_os = "linux")]
async fn splice_copy(
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    count: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;

    let from = reader.as_ref().as_raw_fd();
    let to = writer.as_ref().as_raw_fd();
    let mut pipe: Option<sys::Pipe> = None;
    let mut in_pipe = 0usize;
    let mut eof = false;
    loop {
        if in_pipe == 0 {
            if eof {
                let _ = writer.shutdown().await;
                return Ok(());
            }
            if pipe.is_some() {
                match tokio::time::timeout(PIPE_IDLE, reader.readable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        pipe = None;
                        reader.readable().await?;
                    }
                }
            } else {
                reader.readable().await?;
            }
            let pipe = match &mut pipe {
                Some(pipe) => pipe,
                empty => match sys::Pipe::new(PIPE_BYTES) {
                    Ok(new) => empty.insert(new),
                    // Out of descriptors or pipe budget: copy through user memory instead.
                    Err(_) => return scratch_copy(reader, writer, count, activity).await,
                },
            };
            // The pipe is empty, so `WouldBlock` can only mean that the socket has nothing, and
            // tokio may forget its readiness.
            match reader
                .as_ref()
                .try_io(Interest::READABLE, || pipe.fill_from(from, pipe.capacity))
            {
                Ok(0) => eof = true,
                Ok(n) => in_pipe = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let Some(pipe) = &pipe else {
            return Err(io::Error::other("bytes in flight without a pipe"));
        };
        match writer
            .as_ref()
            .try_io(Interest::WRITABLE, || pipe.drain_to(to, in_pipe))
        {
            Ok(0) => {
                return Err(io::Error::other(
                    "the tunnel's pipe gave no bytes although it held some",
                ))
            }
            Ok(n) => {
                in_pipe -= n;
                count.fetch_add(n as u64, Ordering::Relaxed);
                activity.touch();
                // A sender that never pauses must still let the other tasks on this thread run.
                tokio::task::consume_budget().await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The receiver is slower: meanwhile take more from the sender, so that it is not
                // stalled too. Here `WouldBlock` may also mean a full pipe, so this call goes
                // around tokio's readiness, which must only be cleared when the socket is empty.
                if !eof && in_pipe < pipe.capacity {
                    match pipe.fill_from(from, pipe.capacity - in_pipe) {
                        Ok(0) => eof = true,
                        Ok(n) => in_pipe += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                writer.as_ref().writable().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn scratch_copy(
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    count: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    loop {
        reader.readable().await?;
        match pass(&reader, &writer, count)? {
            Pass::Drained => {}
            Pass::Eof => {
                // The peer may already be gone; its own direction reports that.
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Pass::Backlog(rest) => {
                writer.write_all(&rest).await?;
                count.fetch_add(rest.len() as u64, Ordering::Relaxed);
            }
        }
        activity.touch();
    }
}

/// Reads what is there into this thread's scratch buffer and writes it on without waiting.
/// Never awaits, so the scratch buffer is never held across a task switch.
fn pass(reader: &OwnedReadHalf, writer: &OwnedWriteHalf, count: &AtomicU64) -> io::Result<Pass> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        // A bounded pass, so that a fast sender cannot keep this worker thread to itself.
        for _ in 0..PASS_READS {
            let n = match reader.try_read(&mut scratch) {
                Ok(0) => return Ok(Pass::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pass::Drained),
                Err(e) => return Err(e),
            };
            let mut written = 0;
            while written < n {
                match writer.try_write(&scratch[written..n]) {
                    Ok(m) => {
                        written += m;
                        count.fetch_add(m as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Pass::Backlog(scratch[written..n].to_vec()))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Pass::Drained)
    })
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

    /// 3 MB from a fast sender to a receiver that pauses now and then, through one direction.
    async fn large_transfer_to_a_slow_receiver(splice: bool) {
        let (mut sender, from) = pair().await;
        let (to, mut receiver) = pair().await;
        let (from_read, _from_write) = from.into_split();
        let (_to_read, to_write) = to.into_split();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let send = tokio::spawn(async move {
            sender.write_all(&sent).await.unwrap();
            sender.shutdown().await.unwrap();
            sender
        });
        let receive = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 1000];
            loop {
                let n = receiver.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&chunk[..n]);
                if got.len() % 100_000 < 1000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let count = AtomicU64::new(0);
        let activity = Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        if splice {
            copy(from_read, to_write, &count, &activity).await.unwrap();
        } else {
            scratch_copy(from_read, to_write, &count, &activity)
                .await
                .unwrap();
        }
        let _sender = send.await.unwrap();
        let got = receive.await.unwrap();
        assert!(got == data, "the bytes differ");
        assert_eq!(count.into_inner(), 3_000_000);
    }

    /// On Linux, the splice path.
    #[tokio::test]
    async fn a_large_transfer_to_a_slow_receiver_arrives_intact() {
        large_transfer_to_a_slow_receiver(true).await;
    }

    /// The path used off Linux and when no pipe can be had.
    #[tokio::test]
    async fn the_scratch_path_copies_a_large_transfer_intact() {
        large_transfer_to_a_slow_receiver(false).await;
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
    async fn a_busy_tunnel_is_closed_at_the_total_timeout() {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut upstream) = pair().await;
        let limits = TunnelLimits {
            idle: Duration::from_secs(10),
            total: Duration::from_millis(500),
        };
        let pump = tokio::spawn(async move { pump(client_side, b"", upstream_side, limits).await });
        let chatter = tokio::spawn(async move {
            let mut got = [0u8; 1];
            for _ in 0..100 {
                if upstream.write_all(b"x").await.is_err()
                    || client.read(&mut got).await.ok() != Some(1)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let started = Instant::now();
        let transfer = pump.await.unwrap();
        assert!(
            matches!(transfer.end, TunnelEnd::TotalTimeout),
            "{:?}",
            transfer.end
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(transfer.down > 5, "{transfer:?}");
        chatter.abort();
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
