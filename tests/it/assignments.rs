//! Assignments derived from the id: pinned values for one stage, and for many ids the rules that
//! must always hold.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use bottle::spec::Manifest;
use bottle::stage::alloc::{self, SidecarKind, GATEWAY_PORTS, HOST_PORT_FIRST, HOST_PORT_LAST};
use bottle::stage::StageId;

fn spec_with_everything() -> bottle::spec::ResolvedSpec {
    let path = crate::support::repo().join("golden/everything/bottle.toml");
    let text = std::fs::read_to_string(path).unwrap();
    Manifest::parse("everything.toml", &text)
        .unwrap()
        .resolve(None)
        .unwrap()
}

/// Assignments of a fixed id (so that a new stage format does not move them): if these change,
/// the network of every stage changes, which needs a new stage format.
#[test]
fn pinned_assignments_of_a_fixed_id() {
    let spec = spec_with_everything();
    let id: StageId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let a = alloc::allocate(&id, &spec);
    assert_eq!(a.slug, "bottle-claude-0123456789ab");
    assert_eq!(a.subnet, Ipv4Addr::new(10, 129, 219, 0));
    assert_eq!(a.gateway_ip, Ipv4Addr::new(10, 129, 219, 1));
    assert_eq!(a.guest_ip, Ipv4Addr::new(10, 129, 219, 2));
    assert_eq!(a.proxy_ip, Ipv4Addr::new(10, 129, 219, 254));
    assert_eq!(a.guest_mac.to_string(), "02:d8:0b:37:c1:9a");
    assert_eq!(a.gateway_mac.to_string(), "06:d8:0b:37:c1:9a");
    let ports: Vec<(&str, SidecarKind, u16, u16)> = a
        .sidecars
        .iter()
        .map(|s| {
            (
                s.request.name.as_str(),
                s.request.kind,
                s.request.guest_port,
                s.host_port,
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("egress", SidecarKind::Egress, 3128, 24217),
            ("git", SidecarKind::Git, 9418, 23382),
            ("supervise", SidecarKind::Supervise, 8765, 27644),
            ("docs-index", SidecarKind::Custom, 8080, 20841),
            ("metrics", SidecarKind::Custom, 9100, 27531),
        ]
    );
}

proptest! {
    #[test]
    fn assignments_always_follow_the_rules(bytes in any::<[u8; 16]>()) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let id: StageId = hex.parse().unwrap();
        let a = alloc::allocate(&id, &spec_with_everything());
        let subnet = u32::from(a.subnet);
        prop_assert_eq!(subnet & 0xff, 0);
        prop_assert_eq!(subnet >> 23, u32::from(Ipv4Addr::new(10, 128, 0, 0)) >> 23, "outside 10.128.0.0/9");
        for ip in [a.gateway_ip, a.guest_ip, a.proxy_ip] {
            prop_assert_eq!(u32::from(ip) >> 8, subnet >> 8);
        }
        prop_assert!(a.gateway_ip != a.guest_ip && a.guest_ip != a.proxy_ip && a.proxy_ip != a.gateway_ip);
        for mac in [a.guest_mac, a.gateway_mac] {
            prop_assert_eq!(mac.0[0] & 0b11, 0b10, "not locally administered unicast");
        }
        prop_assert_ne!(a.guest_mac, a.gateway_mac);
        let mut host_ports: Vec<u16> = a.sidecars.iter().map(|s| s.host_port).collect();
        prop_assert!(host_ports.iter().all(|p| (HOST_PORT_FIRST..=HOST_PORT_LAST).contains(p)));
        host_ports.sort();
        host_ports.dedup();
        prop_assert_eq!(host_ports.len(), 5, "host ports collide");
        for sidecar in &a.sidecars {
            prop_assert!(!GATEWAY_PORTS.contains(&sidecar.request.guest_port));
        }
    }
}
