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

/// If these change, every stage's network changes: that needs a new stage format.
#[test]
fn pinned_assignments_of_the_everything_case() {
    let spec = spec_with_everything();
    let id = StageId::of_canonical_spec(&spec.canonical_bytes());
    let a = alloc::allocate(&id, &spec);
    assert_eq!(id.to_string(), "9c79c0c72d164905e162966f33d7629d");
    assert_eq!(a.slug, "bottle-claude-9c79c0c72d16");
    assert_eq!(a.subnet, Ipv4Addr::new(10, 147, 30, 0));
    assert_eq!(a.gateway_ip, Ipv4Addr::new(10, 147, 30, 1));
    assert_eq!(a.guest_ip, Ipv4Addr::new(10, 147, 30, 2));
    assert_eq!(a.proxy_ip, Ipv4Addr::new(10, 147, 30, 254));
    assert_eq!(a.guest_mac.to_string(), "02:ba:8f:63:c6:77");
    assert_eq!(a.gateway_mac.to_string(), "06:ba:8f:63:c6:77");
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
            ("egress", SidecarKind::Egress, 3128, 28595),
            ("git", SidecarKind::Git, 9418, 23258),
            ("supervise", SidecarKind::Supervise, 8765, 28427),
            ("docs-index", SidecarKind::Custom, 8080, 20717),
            ("metrics", SidecarKind::Custom, 9100, 24958),
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
