//! A guest on smoltcp attached to gvproxy's VM socket with the framing smolvm's NIC uses: each
//! Ethernet frame preceded by its length as a 4-byte big-endian integer. Static address, no
//! DHCP, like a smolvm guest with the external network contract.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

pub struct Framed {
    stream: UnixStream,
    inbox: Vec<u8>,
    frames: VecDeque<Vec<u8>>,
}

impl Framed {
    pub fn connect(path: &Path) -> io::Result<Framed> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_millis(1)))?;
        Ok(Framed {
            stream,
            inbox: Vec::new(),
            frames: VecDeque::new(),
        })
    }

    /// Reads what has arrived (waiting at most a millisecond) and splits it into frames.
    fn fill(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "gvproxy closed the VM socket",
                ))
            }
            Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        while self.inbox.len() >= 4 {
            let len = u32::from_be_bytes(self.inbox[..4].try_into().expect("4 bytes")) as usize;
            if self.inbox.len() < 4 + len {
                break;
            }
            self.frames.push_back(self.inbox[4..4 + len].to_vec());
            self.inbox.drain(..4 + len);
        }
        Ok(())
    }
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut UnixStream);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
        let result = f(&mut frame[4..]);
        let _ = self.0.write_all(&frame);
        result
    }
}

impl Device for Framed {
    type RxToken<'a>
        = Rx
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.frames.pop_front()?;
        Some((Rx(frame), Tx(&mut self.stream)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.stream))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

pub struct Guest {
    device: Framed,
    iface: Interface,
    sockets: SocketSet<'static>,
    next_port: u16,
}

/// How a TCP connection attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// Established; what the peer answered to our line, if anything.
    Established {
        reply: String,
    },
    /// Reset or closed before it was established.
    Refused,
    TimedOut,
}

impl Guest {
    pub fn attach(
        socket: &Path,
        mac: [u8; 6],
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> io::Result<Guest> {
        let mut device = Framed::connect(socket)?;
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let mut iface = Interface::new(config, &mut device, SmolInstant::now());
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(address), prefix))
                .expect("one address fits");
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .expect("one route fits");
        Ok(Guest {
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            next_port: 40000,
        })
    }

    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    /// Polls until `done` says so or `timeout` passes.
    fn until<T>(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut SocketSet<'static>) -> Option<T>,
    ) -> io::Result<Option<T>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.device.fill()?;
            self.iface
                .poll(SmolInstant::now(), &mut self.device, &mut self.sockets);
            if let Some(value) = done(&mut self.sockets) {
                return Ok(Some(value));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// One UDP request and its first reply.
    pub fn udp_exchange(
        &mut self,
        to: (Ipv4Addr, u16),
        payload: &[u8],
        timeout: Duration,
    ) -> io::Result<Option<Vec<u8>>> {
        let socket = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        );
        let handle = self.sockets.add(socket);
        let port = self.port();
        let endpoint = IpEndpoint::new(IpAddress::Ipv4(to.0), to.1);
        {
            let s = self.sockets.get_mut::<udp::Socket>(handle);
            s.bind(port).map_err(|e| io::Error::other(e.to_string()))?;
            s.send_slice(payload, endpoint)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        let reply = self.until(timeout, |sockets| {
            let s = sockets.get_mut::<udp::Socket>(handle);
            let mut buf = [0u8; 4096];
            s.recv_slice(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
        })?;
        self.sockets.remove(handle);
        Ok(reply)
    }

    /// Connects, sends `line` when established, and collects what comes back until the peer
    /// closes or `timeout` passes.
    pub fn tcp_exchange(
        &mut self,
        to: (Ipv4Addr, u16),
        line: &[u8],
        timeout: Duration,
    ) -> io::Result<Connect> {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        let handle = self.sockets.add(socket);
        let port = self.port();
        self.sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(self.iface.context(), (IpAddress::Ipv4(to.0), to.1), port)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut established = false;
        let mut sent = false;
        let mut reply = Vec::new();
        let outcome = self.until(timeout, |sockets| {
            let s = sockets.get_mut::<tcp::Socket>(handle);
            match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => None,
                tcp::State::Closed if !established => Some(Connect::Refused),
                _ => {
                    established = true;
                    if !sent && s.may_send() {
                        let _ = s.send_slice(line);
                        sent = true;
                    }
                    while s.can_recv() {
                        let mut buf = [0u8; 4096];
                        match s.recv_slice(&mut buf) {
                            Ok(n) if n > 0 => reply.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                    if sent && !s.may_recv() {
                        s.close();
                        Some(Connect::Established {
                            reply: String::from_utf8_lossy(&reply).into_owned(),
                        })
                    } else {
                        None
                    }
                }
            }
        })?;
        let outcome = match outcome {
            Some(outcome) => outcome,
            None if established => Connect::Established {
                reply: String::from_utf8_lossy(&reply).into_owned(),
            },
            None => Connect::TimedOut,
        };
        // Let the FIN or RST go out before the socket disappears.
        let _ = self.until(Duration::from_millis(20), |_| None::<()>);
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        let _ = self.until(Duration::from_millis(5), |_| None::<()>);
        self.sockets.remove(handle);
        Ok(outcome)
    }
}
