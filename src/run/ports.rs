//! Host ports for sidecars: the stage's preferred port when it is free, else the next free one
//! in the same range, and whether a sidecar listens yet. Choices and parsing are pure; the
//! probes (a bind, a read of `/proc/net/tcp`) are separate.

use std::net::{Ipv4Addr, TcpListener};

use crate::stage::alloc::{HOST_PORT_FIRST, HOST_PORT_LAST};

/// The preferred port if usable, else the next usable one after it (wrapping inside
/// HOST_PORT_FIRST..=HOST_PORT_LAST), never one in `taken`. None when the range is full.
pub fn choose(preferred: u16, taken: &[u16], is_free: impl Fn(u16) -> bool) -> Option<u16> {
    let span = u32::from(HOST_PORT_LAST - HOST_PORT_FIRST) + 1;
    let start = u32::from(preferred.clamp(HOST_PORT_FIRST, HOST_PORT_LAST) - HOST_PORT_FIRST);
    (0..span)
        .map(|step| HOST_PORT_FIRST + ((start + step) % span) as u16)
        .find(|port| !taken.contains(port) && is_free(*port))
}

/// A port is free when we can listen on it on host loopback right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The ports with a TCP listener on 127.0.0.1 or 0.0.0.0, from the text of `/proc/net/tcp`
/// (addresses are little-endian hex, state 0A is LISTEN).
pub fn loopback_listeners(proc_net_tcp: &str) -> Vec<u16> {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, port) = local.split_once(':')?;
            let reachable = matches!(addr, "0100007F" | "00000000");
            (state == "0A" && reachable).then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

/// Is anything listening on host loopback `port` (in this network namespace)? Reads the
/// kernel's table instead of connecting, so the sidecar sees no probe connection.
pub fn is_listening(port: u16) -> bool {
    std::fs::read_to_string("/proc/net/tcp")
        .map(|table| loopback_listeners(&table).contains(&port))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_the_kernels_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:6D9F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 011212C6:0051 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";
        assert_eq!(loopback_listeners(table), [0x6D9F, 0x50]);
    }

    #[test]
    fn a_listener_we_open_is_seen() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening(listener.local_addr().unwrap().port()));
    }

    #[test]
    fn the_preferred_port_wins_when_free() {
        assert_eq!(choose(25000, &[], |_| true), Some(25000));
    }

    #[test]
    fn a_taken_port_is_replaced_by_the_next_free_one_wrapping_in_range() {
        assert_eq!(choose(25000, &[], |p| p != 25000), Some(25001));
        assert_eq!(
            choose(HOST_PORT_LAST, &[], |p| p != HOST_PORT_LAST),
            Some(HOST_PORT_FIRST)
        );
        assert_eq!(choose(25000, &[25001], |p| p != 25000), Some(25002));
        assert_eq!(choose(25000, &[], |_| false), None);
    }

    #[test]
    fn a_port_we_listen_on_is_not_free() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!is_free(listener.local_addr().unwrap().port()));
    }
}
