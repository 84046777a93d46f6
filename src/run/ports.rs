//! Host ports for sidecars: the stage's preferred port when it is free, else the next free one
//! in the same range. The choice is a pure function of what is free; probing is the caller's.

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

#[cfg(test)]
mod tests {
    use super::*;

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
