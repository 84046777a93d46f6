//! The golden cases (golden/<case>/bottle.toml and the exact stage of each agent) and the
//! committed stages of the examples (stages/). CI runs on another machine than the one that
//! wrote them, so equality here is the cross-machine reproducibility check.

use std::collections::BTreeMap;
use std::path::Path;

use bottle::render::gvproxy;
use bottle::spec::Manifest;
use bottle::stage::{self, Stage};

use crate::support::repo;

fn stages_of(manifest: &Path) -> Vec<Stage> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let parsed =
        Manifest::parse(&manifest.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
    stage::build_all(&parsed).unwrap()
}

fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect()
}

fn expected_files(stage: &Stage) -> BTreeMap<String, Vec<u8>> {
    stage
        .files
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect()
}

/// A readable failure: the first differing file as a unified diff.
fn assert_same(
    what: &str,
    want: &BTreeMap<String, Vec<u8>>,
    got: &BTreeMap<String, Vec<u8>>,
    fix: &str,
) {
    let names_want: Vec<_> = want.keys().collect();
    let names_got: Vec<_> = got.keys().collect();
    assert_eq!(names_want, names_got, "{what}: different files; {fix}");
    for (name, bytes) in want {
        if got[name] != *bytes {
            let diff = similar::TextDiff::from_lines(
                std::str::from_utf8(&got[name]).unwrap_or("<binary>"),
                std::str::from_utf8(bytes).unwrap_or("<binary>"),
            )
            .unified_diff()
            .header("committed", "rendered now")
            .to_string();
            panic!("{what}/{name} differs from what the renderers write; {fix}\n{diff}");
        }
    }
}

pub fn golden_cases() -> Vec<std::path::PathBuf> {
    let mut cases: Vec<_> = std::fs::read_dir(repo().join("golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bottle.toml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "the golden cases are missing");
    cases
}

#[test]
fn golden_cases_render_exactly() {
    for case in golden_cases() {
        let stages = stages_of(&case.join("bottle.toml"));
        let agent_dirs: Vec<String> = std::fs::read_dir(&case)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            agent_dirs.len(),
            stages.len(),
            "{}: one directory per agent; run `cargo xtask bless`",
            case.display()
        );
        for stage in stages {
            let dir = case.join(&stage.spec.agent);
            let mut want = expected_files(&stage);
            want.insert("id".into(), format!("{}\n", stage.id).into_bytes());
            assert_same(
                &dir.display().to_string(),
                &want,
                &files_in(&dir),
                "run `cargo xtask bless` if the change is intended",
            );
        }
    }
}

#[test]
fn committed_stages_match_the_examples() {
    let mut want = BTreeMap::new();
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            for stage in stages_of(&path) {
                want.insert(stage.id.to_string(), stage);
            }
        }
    }
    let committed: Vec<String> = std::fs::read_dir(repo().join("stages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let mut committed_sorted = committed.clone();
    committed_sorted.sort();
    assert_eq!(
        want.keys().cloned().collect::<Vec<_>>(),
        committed_sorted,
        "stages/ is stale: run `cargo xtask stages`"
    );
    for (id, stage) in &want {
        let dir = repo().join("stages").join(id);
        assert_same(
            &format!("stages/{id}"),
            &expected_files(stage),
            &files_in(&dir),
            "run `cargo xtask stages`",
        );
    }
}

/// Every gvproxy.yaml of every golden and committed stage, read back into gvproxy's schema.
#[test]
fn gvproxy_configs_are_contained_by_construction() {
    let mut files = Vec::new();
    for case in golden_cases() {
        for stage in stages_of(&case.join("bottle.toml")) {
            files.push(stage);
        }
    }
    for stage in files {
        let bytes = stage.file(bottle::render::GVPROXY_YAML).unwrap();
        check_gvproxy(bytes, &stage);
    }
}

pub fn check_gvproxy(bytes: &[u8], stage: &Stage) {
    let text = std::str::from_utf8(bytes).unwrap();
    let config = gvproxy::parse(bytes)
        .unwrap_or_else(|e| panic!("gvproxy.yaml does not fit gvproxy's schema: {e}\n{text}"));
    assert!(
        config.listen.is_none() && config.services.is_none() && config.interfaces.is_none(),
        "{text}"
    );
    assert!(
        config.forwards.is_none() && config.stack.forwards.is_empty(),
        "{text}"
    );
    assert!(
        config.pid_file.is_none()
            && config.log_file.is_none()
            && config.stack.capture_file.is_none(),
        "{text}"
    );
    assert!(
        !text.contains('/') || text.lines().all(|l| !l.contains(": /")),
        "an absolute path in\n{text}"
    );
    let stack = &config.stack;
    let plan = &stage.plan.network;
    assert_eq!(stack.subnet, plan.subnet);
    let (base, prefix) = stack.subnet.split_once('/').unwrap();
    assert_eq!(prefix, "24");
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    let inside = |ip: &std::net::Ipv4Addr| u32::from(*ip) >> 8 == u32::from(base) >> 8;
    assert!(!stack.nat.is_empty(), "nat must be explicit");
    assert!(
        !stack.gateway_virtual_ips.is_empty(),
        "gatewayVirtualIPs must be explicit"
    );
    assert!(stack.nat.keys().all(inside) && stack.gateway_virtual_ips.iter().all(inside));
    assert!(stack
        .nat
        .values()
        .all(|to| *to == std::net::Ipv4Addr::LOCALHOST));
    assert!(inside(&stack.gateway_ip) && stack.dhcp_static_leases.keys().all(inside));
    assert!(!stack.ec2_metadata_access);
    let proxy = stack
        .dns
        .iter()
        .find(|z| z.name == "internal.")
        .and_then(|z| z.records.iter().find(|r| r.name == "proxy"))
        .expect("proxy.internal is answered");
    assert_eq!(proxy.ip, plan.proxy_ip);
    assert!(stack.gateway_virtual_ips.contains(&proxy.ip) && stack.nat.contains_key(&proxy.ip));
    let catch_all = stack.dns.last().expect("zones");
    assert!(
        catch_all.name.is_empty() && catch_all.records.is_empty() && catch_all.default_ip.is_none(),
        "the last zone must be a catch-all"
    );
}
