//! Rendering as seen from outside: hostile values round-trip exactly and can never add a key;
//! nothing of the machine, the user, the clock or the environment leaks into a stage.

use bottle::render::{self, smolfile};
use bottle::spec::Manifest;
use bottle::stage;

use crate::support::{repo, TestEnv};

#[test]
fn hostile_values_round_trip_exactly_and_inject_nothing() {
    let text = std::fs::read_to_string(repo().join("golden/adversarial/bottle.toml")).unwrap();
    let spec = Manifest::parse("adversarial", &text)
        .unwrap()
        .resolve(None)
        .unwrap();
    let built = stage::build(&spec);

    let parsed =
        smolfile::parse(built.file(render::SMOLFILE).unwrap()).expect("strict Smolfile model");
    assert_eq!(parsed.entrypoint, spec.command);
    assert_eq!(parsed.workdir, spec.workdir);
    for (key, value) in &spec.env {
        assert!(
            parsed.env.contains(&format!("{key}={value}")),
            "{key} did not survive"
        );
    }
    // The strict model refuses unknown keys: an injected `net`, `ports` or table would fail above.
    let table: toml::Table =
        toml::from_str(std::str::from_utf8(built.file(render::SMOLFILE).unwrap()).unwrap())
            .unwrap();
    let keys: Vec<&str> = table.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["cpus", "entrypoint", "env", "image", "memory", "workdir"]
    );

    let back =
        bottle::spec::ResolvedSpec::from_canonical_bytes(built.file(render::SPEC_JSON).unwrap())
            .unwrap();
    assert_eq!(back, spec);
    let plan = render::plan::parse(built.file(render::PLAN_JSON).unwrap()).unwrap();
    assert_eq!(plan, built.plan);
}

#[test]
fn smolfiles_never_enable_networking_and_pass_secrets_by_reference() {
    for case in crate::golden::golden_cases() {
        let text = std::fs::read_to_string(case.join("bottle.toml")).unwrap();
        for built in stage::build_all(&Manifest::parse("g", &text).unwrap()).unwrap() {
            let raw = std::str::from_utf8(built.file(render::SMOLFILE).unwrap()).unwrap();
            let table: toml::Table = toml::from_str(raw).unwrap();
            for forbidden in ["net", "net_backend", "ports", "volumes", "network", "init"] {
                assert!(!table.contains_key(forbidden), "{forbidden} in\n{raw}");
            }
            let parsed = smolfile::parse(raw.as_bytes()).unwrap();
            for (name, secret) in &parsed.secrets {
                assert_eq!(&secret.from_env, name);
                assert!(built.spec.secrets.contains(name));
            }
        }
    }
}

/// Two generations of the same manifest under different users, homes, locales, time zones,
/// host names and directories give byte-identical stages that mention none of them.
#[test]
fn no_machine_detail_leaks_into_a_stage() {
    let manifest = std::fs::read_to_string(repo().join("examples/claude.toml")).unwrap();
    let one = TestEnv::new();
    let two = TestEnv::new();
    one.write("bottle.toml", &manifest);
    two.write("bottle.toml", &manifest);
    let id_one = one.ok(&["gen"]);
    let out = two
        .command(&["gen"])
        .env("HOME", "/nonexistent/home")
        .env("USER", "someone-else")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "tr_TR.UTF-8")
        .env("TZ", "Pacific/Kiritimati")
        .env("HOSTNAME", "another-host")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), id_one);
    let dir_one = one.store().join(id_one.trim());
    let dir_two = two.store().join(id_one.trim());
    let names: Vec<String> = std::fs::read_dir(&dir_one)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 5);
    for name in &names {
        let a = std::fs::read(dir_one.join(name)).unwrap();
        assert_eq!(a, std::fs::read(dir_two.join(name)).unwrap(), "{name}");
        let text = String::from_utf8(a).unwrap();
        for leak in [
            one.path().to_str().unwrap(),
            two.path().to_str().unwrap(),
            "/tmp",
            "/root",
            "someone-else",
            "2026",
        ] {
            assert!(!text.contains(leak), "{name} contains {leak:?}");
        }
    }
}
