//! Stage lifecycle: pins and gc, deterministic export and checked import, `gen --check`, and the
//! commands of the README's CI recipe, in the order the recipe runs them.

use std::process::Command;

use crate::support::{repo, TestEnv, MINIMAL};

fn age(dir: &std::path::Path, ago: &str) {
    let status = Command::new("touch")
        .args(["-d", ago])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

fn gen_variant(env: &TestEnv, cpus: u8) -> String {
    let name = format!("m{cpus}.toml");
    env.write(
        &name,
        &MINIMAL.replace("image =", &format!("cpus = {cpus}\nimage =")),
    );
    env.ok(&["gen", &name]).trim().to_owned()
}

#[test]
fn gc_keeps_pinned_in_use_and_recent_stages_and_removes_the_rest() {
    let env = TestEnv::new();
    let pinned = gen_variant(&env, 1);
    let running = gen_variant(&env, 2);
    let old = gen_variant(&env, 3);
    let recent = gen_variant(&env, 4);
    for id in [&pinned, &running, &old] {
        age(&env.store().join(id), "10 days ago");
    }
    env.ok(&["pin", &pinned[..8], "--name", "release"]);
    let store = bottle::stage::Store::new(env.store());
    let _run = store.hold(&running.parse().unwrap()).unwrap();

    let dry = env.ok(&["gc", "--dry-run", "--keep-since", "7d"]);
    assert!(dry.contains(&format!("would remove  {old}")), "{dry}");
    assert!(
        env.store().join(&old).is_dir(),
        "a dry run removed something"
    );

    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["gc", "--keep-since", "7d", "--json"])).unwrap();
    assert_eq!(json["version"], 1);
    assert!(json["freed"].as_u64().unwrap() > 0);
    let kept = |id: &str| {
        json["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["kept"]
            .clone()
    };
    assert_eq!(kept(&pinned), "pinned");
    assert_eq!(kept(&running), "in_use");
    assert_eq!(kept(&recent), "recent");
    assert!(kept(&old).is_null());
    assert!(!env.store().join(&old).exists());
    for id in [&pinned, &running, &recent] {
        assert!(env.store().join(id).is_dir(), "{id} was removed");
    }
    assert_eq!(env.run(&["verify"]).code, 0);

    env.ok(&["unpin", "release"]);
    drop(_run);
    env.ok(&["gc"]);
    assert_eq!(
        env.ok(&["ls", "--json"]).matches("\"id\"").count(),
        0,
        "without pins or a bound, gc removes all"
    );
}

#[test]
fn unpin_of_something_unpinned_is_an_error() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]).trim().to_owned();
    let run = env.run(&["unpin", &id]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not pinned"), "{}", run.stderr);
    let run = env.run(&["pin", &id, "--name", "bad name"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn export_is_byte_identical_across_stores_and_import_round_trips() {
    let one = TestEnv::new();
    let two = TestEnv::new();
    let manifest = std::fs::read_to_string(repo().join("examples/claude.toml")).unwrap();
    one.write("bottle.toml", &manifest);
    two.write("bottle.toml", &manifest);
    let id = one.ok(&["gen"]).trim().to_owned();
    two.ok(&["gen"]);
    // A different umask and a later time on the second machine change nothing.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    one.ok(&["export", &id, "-o", "a.tar"]);
    let out = two
        .command(&["export", &id[..6], "-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let a = std::fs::read(one.path().join("a.tar")).unwrap();
    assert_eq!(a, out.stdout, "the same stage exported twice differs");

    let three = TestEnv::new();
    let imported = three
        .command(&["import", one.path().join("a.tar").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert_eq!(String::from_utf8(imported.stdout).unwrap().trim(), id);
    assert_eq!(three.run(&["verify"]).code, 0);
}

fn archive_of(env: &TestEnv) -> (String, Vec<u8>) {
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]).trim().to_owned();
    env.ok(&["export", &id, "-o", "s.tar"]);
    (id, std::fs::read(env.path().join("s.tar")).unwrap())
}

fn assert_refused(archive: &[u8], expected: &str) {
    let env = TestEnv::new();
    let path = env.path().join("bad.tar");
    std::fs::write(&path, archive).unwrap();
    let run = env.run(&["import", path.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{expected}: {}", run.stderr);
    assert!(
        run.stderr.contains(expected),
        "expected {expected:?} in\n{}",
        run.stderr
    );
    assert!(
        env.store_listing().is_empty(),
        "{expected}: the store was touched: {:?}",
        env.store_listing()
    );
}

/// A tar with one entry whose header is written by hand, so that it can say what a careful
/// writer would refuse to.
fn raw_archive(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    let field = &mut header.as_old_mut().name;
    field[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o444);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn import_refuses_bad_archives_and_leaves_nothing() {
    let env = TestEnv::new();
    let (id, good) = archive_of(&env);

    let mut tampered = good.clone();
    let at = tampered
        .windows(4)
        .position(|w| w == b"cpus")
        .expect("the smolfile is in the archive");
    tampered[at + 7] = b'9';
    assert_refused(&tampered, "damaged");

    assert_refused(
        &raw_archive(
            &format!("{id}/../../evil"),
            tar::EntryType::Regular,
            b"x",
            None,
        ),
        "outside a stage directory",
    );
    assert_refused(
        &raw_archive("../evil", tar::EntryType::Regular, b"x", None),
        "outside a stage directory",
    );
    assert_refused(
        &raw_archive("/etc/evil", tar::EntryType::Regular, b"x", None),
        "outside a stage directory",
    );
    assert_refused(
        &raw_archive(
            &format!("{id}/plan.json"),
            tar::EntryType::Symlink,
            b"",
            Some("/etc/passwd"),
        ),
        "is a link",
    );
    assert_refused(
        &raw_archive(
            &format!("{id}/plan.json"),
            tar::EntryType::Link,
            b"",
            Some("x"),
        ),
        "is a link",
    );
    assert_refused(&good[..good.len() / 2 + 100], "truncated");
    assert_refused(&good[..1024], "cut short");
    assert_refused(&good[..1536], "missing");
    assert_refused(
        b"not an archive at all, just some text that is long enough",
        "truncated or is not a tar archive",
    );
}

#[test]
fn gen_check_fails_on_a_stale_stage_and_passes_on_a_fresh_one() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let missing = env.run(&["gen", "--check"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stdout.contains("has no stage of agent `a`"),
        "{}",
        missing.stdout
    );
    assert!(env.store_listing().is_empty(), "--check wrote something");

    let id = env.ok(&["gen"]);
    assert_eq!(env.ok(&["gen", "--check"]), id);

    env.write(
        "bottle.toml",
        &MINIMAL.replace("image =", "cpus = 3\nimage ="),
    );
    let stale = env.run(&["gen", "--check"]);
    assert_eq!(stale.code, 1);
    assert!(stale.stdout.contains("~ cpus: 2 -> 3"), "{}", stale.stdout);
    assert!(
        stale.stderr.contains("run `bottle gen`"),
        "{}",
        stale.stderr
    );
}

/// The README's "Use in CI" recipe, command by command: cache key, generate, verify, export as
/// an artifact; then, in a second job, import and diff against the main branch's manifest.
#[test]
fn the_ci_recipe_works() {
    let job = TestEnv::new();
    let manifest = std::fs::read_to_string(repo().join("examples/claude.toml")).unwrap();
    job.write("bottle.toml", &manifest);
    let key = job.ok(&["hash"]).trim().to_owned();
    let id = job.ok(&["gen"]).trim().to_owned();
    assert_eq!(key, id);
    job.ok(&["verify"]);
    job.ok(&["export", &id, "-o", "stage.tar"]);

    let review = TestEnv::new();
    review.write("main.toml", &manifest.replace("cpus = 2", "cpus = 1"));
    let imported = review.ok(&["import", job.path().join("stage.tar").to_str().unwrap()]);
    assert_eq!(imported.trim(), id);
    let diff = review.run(&["diff", "main.toml", &id]);
    assert_eq!(diff.code, 1);
    assert!(diff.stdout.contains("~ cpus: 1 -> 2"), "{}", diff.stdout);
}
