//! The commands as a user meets them: output streams, exit codes, error messages.

use crate::support::{TestEnv, MINIMAL};

#[test]
fn gen_prints_the_id_alone_and_hash_agrees_without_writing() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let hash = env.ok(&["hash"]);
    assert!(env.store_listing().is_empty(), "hash wrote something");
    let id = env.ok(&["gen"]);
    assert_eq!(id, hash);
    assert_eq!(id.trim().len(), 32);
    assert!(env.store().join(id.trim()).join("smolfile.toml").is_file());
}

#[test]
fn gen_of_an_existing_stage_rewrites_nothing() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]);
    let file = env.store().join(id.trim()).join("plan.json");
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = env.run(&["gen"]);
    assert_eq!(again.code, 0);
    assert_eq!(again.stdout, id);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn gen_json_and_store_selection() {
    let env = TestEnv::new();
    env.write("m.toml", MINIMAL);
    let out = env.ok(&["gen", "m.toml", "--json", "--store", "elsewhere"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["created"], true);
    assert_eq!(json["agent"], "a");
    let id = json["id"].as_str().unwrap();
    assert!(env.path().join("elsewhere").join(id).is_dir());

    let out = env
        .command(&["gen", "m.toml", "--json"])
        .env("BOTTLE_STORE", "viaenv")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(env.path().join("viaenv").join(id).is_dir());
}

#[test]
fn files_are_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]);
    for entry in std::fs::read_dir(env.store().join(id.trim())).unwrap() {
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "writable stage file");
    }
}

/// Each bad manifest: the message, the line it points at, and a hint; exit 2 and nothing written.
#[test]
fn bad_manifests_are_explained_and_write_nothing() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "cpu = 2",
            "unknown key `cpu` in [bottles.b]",
            "cpu = 2",
            "did you mean `cpus`?",
        ),
        (
            "cpus = 17",
            "17 CPUs is out of range",
            "cpus = 17",
            "1 to 16",
        ),
        (
            "cpus = \"2\"",
            "expected an integer for `cpus` in [bottles.b]",
            "cpus = \"2\"",
            "type",
        ),
        (
            "memory = \"63MiB\"",
            "below smolvm's floor of 64 MiB",
            "memory",
            "4GiB",
        ),
        ("memory = \"4GB\"", "ambiguous", "memory", "binary units"),
        (
            "egress = { allow = [\"*.com\"] }",
            "would allow a whole top-level domain",
            "egress",
            "*.example.com",
        ),
        (
            "egress = { allow = [\"a*.b.com\"] }",
            "can never match",
            "egress",
            "first label",
        ),
        (
            "egress = { allow = [\"https://x.org\"] }",
            "looks like a URL",
            "egress",
            "host",
        ),
        (
            "egress = { alow = [] }",
            "unknown key `alow` in [bottles.b.egress]",
            "egress",
            "did you mean `allow`?",
        ),
        (
            "egress = { allow_addresses = [\"10.0.0.1/8\"] }",
            "host bits set",
            "egress",
            "10.0.0.0/8",
        ),
        (
            "workdir = \"work\"",
            "is not absolute",
            "workdir",
            "absolute path",
        ),
        (
            "env = { HTTPS_PROXY = \"x\" }",
            "`HTTPS_PROXY` is set by bottle itself",
            "env",
            "remove",
        ),
        (
            "env = { \"1X\" = \"x\" }",
            "invalid variable name `1X`",
            "env",
            "letters",
        ),
        (
            "supervise = { command = [\"s\"] }",
            "never mentions `{port}`",
            "supervise",
            "{port}",
        ),
        (
            "image = \"a b\"",
            "invalid image reference",
            "image = \"a b\"",
            "OCI",
        ),
        (
            "egress = { engine = \"pipelock\", allow = [\"a.example.com:8443\"] }",
            "names a port, and pipelock cannot restrict ports",
            "egress",
            "built-in engine",
        ),
        (
            "egress = { engine = \"squid\" }",
            "unknown egress engine `squid`",
            "egress",
            "`builtin` (the default) and `pipelock`",
        ),
        (
            "sidecars = { x = { command = [\"s\", \"{port}\"], guest_port = 80 } }",
            "port 80 is served by gvproxy's gateway",
            "sidecars",
            "3128, 9418 and 8765",
        ),
        (
            "sidecars = { x = { command = [\"s\", \"{port}\"], guest_port = 3128 } }",
            "belongs to a built-in sidecar",
            "sidecars",
            "other than 53",
        ),
        (
            "sidecars = { git = { command = [\"s\", \"{port}\"], guest_port = 9 } }",
            "`git` is a built-in sidecar",
            "sidecars",
            "another name",
        ),
        (
            "sidecars = { 1x = { command = [\"s\", \"{port}\"], guest_port = 9 } }",
            "does not start with a letter",
            "sidecars",
            "_URL",
        ),
        (
            "sidecars = { a = { command = [\"s\", \"{port}\"], guest_port = 9 }, b = { command = [\"s\", \"{port}\"], guest_port = 9 } }",
            "sidecar `a` already uses guest port 9",
            "sidecars",
            "its own guest port",
        ),
        (
            "sidecars = { x = { command = [\"s\"], guest_port = 9 } }",
            "never mentions `{port}`",
            "sidecars",
            "{port}",
        ),
        (
            "env = { X_URL = \"1\" }\nsidecars = { x = { command = [\"s\", \"{port}\"], guest_port = 9 } }",
            "sidecar `x` gives the guest `X_URL`",
            "sidecars",
            "rename the sidecar",
        ),
    ];
    for (line, message, shown, hint) in cases {
        let env = TestEnv::new();
        let image = if line.starts_with("image") {
            ""
        } else {
            "image = \"alpine\"\n"
        };
        env.write(
            "bottle.toml",
            &format!(
                "[agents.a]\nbottle = \"b\"\ncommand = [\"sh\"]\n\n[bottles.b]\n{image}{line}\n"
            ),
        );
        let run = env.run(&["gen"]);
        assert_eq!(run.code, 2, "{line}: {}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{line}: expected {message:?} in\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("--> bottle.toml:"),
            "{line}: no location in\n{}",
            run.stderr
        );
        let shown_line = run
            .stderr
            .lines()
            .find(|l| l.contains(" | ") && l.contains(shown));
        assert!(
            shown_line.is_some(),
            "{line}: the offending line is not shown in\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(hint),
            "{line}: expected hint {hint:?} in\n{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
        assert!(
            env.store_listing().is_empty(),
            "{line}: something was written"
        );
    }
}

#[test]
fn unknown_key_points_at_its_line_and_column() {
    let env = TestEnv::new();
    env.write("bottle.toml", "[agents.a]\nbottle = \"b\"\ncommand = [\"sh\"]\n\n[bottles.b]\nimage = \"alpine\"\n  cpu = 2\n");
    let run = env.run(&["gen"]);
    assert!(
        run.stderr
            .starts_with("error: unknown key `cpu` in [bottles.b]\n --> bottle.toml:7:3\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn agents_and_bottles_are_checked() {
    let env = TestEnv::new();
    env.write(
        "missing.toml",
        "[agents.a]\nbottle = \"nope\"\ncommand = [\"sh\"]\n\n[bottles.b]\nimage = \"alpine\"\n",
    );
    let run = env.run(&["gen", "missing.toml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("uses bottle `nope`, which is not defined"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("missing.toml:2:10"), "{}", run.stderr);

    env.write("name.toml", "[agents.\"bad--name\"]\nbottle = \"b\"\ncommand = [\"sh\"]\n\n[bottles.b]\nimage = \"alpine\"\n");
    let run = env.run(&["gen", "name.toml"]);
    assert!(
        run.stderr.contains("invalid name `bad--name`"),
        "{}",
        run.stderr
    );

    env.write("secret.toml", "[agents.a]\nbottle = \"b\"\ncommand = [\"sh\"]\nsecrets = [\"TOKEN\"]\nenv = { TOKEN = \"x\" }\n\n[bottles.b]\nimage = \"alpine\"\n");
    let run = env.run(&["gen", "secret.toml"]);
    assert!(
        run.stderr
            .contains("`TOKEN` is both a secret and a plain variable"),
        "{}",
        run.stderr
    );

    env.write("empty.toml", "");
    let run = env.run(&["gen", "empty.toml"]);
    assert!(run.stderr.contains("defines no agent"), "{}", run.stderr);

    let run = env.run(&["gen", "absent.toml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no manifest at `absent.toml`"),
        "{}",
        run.stderr
    );
    assert!(env.store_listing().is_empty());
}

#[test]
fn several_agents_need_a_choice() {
    let env = TestEnv::new();
    let team = std::fs::read_to_string(crate::support::repo().join("examples/team.toml")).unwrap();
    env.write("bottle.toml", &team);
    let run = env.run(&["gen"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`claude`, `codex`"), "{}", run.stderr);
    let run = env.run(&["gen", "--agent", "claud"]);
    assert!(
        run.stderr.contains("did you mean `claude`?"),
        "{}",
        run.stderr
    );
    let claude = env.ok(&["gen", "--agent", "claude"]);
    let codex = env.ok(&["gen", "--agent", "codex"]);
    assert_ne!(claude, codex);
}

#[test]
fn show_tells_what_runs_and_what_is_reachable_without_secret_values() {
    let env = TestEnv::new();
    let example =
        std::fs::read_to_string(crate::support::repo().join("examples/claude.toml")).unwrap();
    env.write("bottle.toml", &example);
    let id = env.ok(&["gen"]);
    let prefix = &id.trim()[..6];
    let out = env
        .command(&["show", prefix])
        .env("ANTHROPIC_API_KEY", "sk-very-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "docker.io/library/node:22-bookworm",
        "claude --dangerously-skip-permissions",
        "4096 MiB",
        "HTTPS_PROXY=http://proxy.internal:3128",
        "ANTHROPIC_API_KEY  (secret",
        "git://proxy.internal:9418/",
        "*.githubusercontent.com (ports 443 and 80)",
        "registry.npmjs.org:443",
        "my-supervisor --listen 127.0.0.1:{port}",
        "the guest cannot reach",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("sk-very-secret"));

    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["show", id.trim(), "--json"])).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["plan"]["sidecars"].as_array().unwrap().len(), 3);
    assert_eq!(
        json["guest_env"]["GIT_GATE_URL"],
        "git://proxy.internal:9418/"
    );
}

#[test]
fn ls_lists_agent_image_and_size() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]);
    let out = env.ok(&["ls"]);
    let row = out
        .lines()
        .find(|l| l.starts_with(id.trim()))
        .expect("the stage is listed");
    assert!(
        row.contains(" a ") && row.contains("docker.io/library/alpine:3.20"),
        "{row}"
    );
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["ls", "--json"])).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["stages"][0]["id"], id.trim());
    assert!(json["stages"][0]["size"].as_u64().unwrap() > 500);
}

#[test]
fn ids_accept_unique_prefixes_only() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]).trim().to_owned();
    assert_eq!(env.run(&["verify", &id[..6]]).code, 0);
    let short = env.run(&["show", &id[..5]]);
    assert_eq!(short.code, 2);
    assert!(
        short.stderr.contains("too short") && short.stderr.contains("at least 6"),
        "{}",
        short.stderr
    );
    let unknown = env.run(&["show", "ffffff"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no stage `ffffff`") && unknown.stderr.contains("bottle ls"),
        "{}",
        unknown.stderr
    );
    let not_hex = env.run(&["show", "XYZ123"]);
    assert!(
        not_hex.stderr.contains("not a stage id"),
        "{}",
        not_hex.stderr
    );
    // A second directory sharing the first 6 digits makes the prefix ambiguous.
    let twin = format!("{}{}", &id[..6], "0".repeat(26));
    std::fs::create_dir(env.store().join(&twin)).unwrap();
    let ambiguous = env.run(&["show", &id[..6]]);
    assert_eq!(ambiguous.code, 2);
    assert!(
        ambiguous.stderr.contains("ambiguous") && ambiguous.stderr.contains(&twin),
        "{}",
        ambiguous.stderr
    );
    assert_eq!(env.run(&["show", &id[..7]]).code, 0);
}

fn tamper(path: &std::path::Path, edit: impl FnOnce(String) -> String) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, edit(text)).unwrap();
}

#[test]
fn verify_names_what_was_tampered_with() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]).trim().to_owned();
    let dir = env.store().join(&id);
    let all = env.run(&["verify"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(all.stdout.contains(&format!("ok       {id}")));

    tamper(&dir.join("smolfile.toml"), |t| t + "net = true\n");
    let run = env.run(&["verify", &id]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("smolfile.toml: differs"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("smolfile.toml: its digest in plan.json does not match"),
        "{}",
        run.stdout
    );
    let show = env.run(&["show", &id]);
    assert_eq!(show.code, 1, "a damaged stage must not be shown as a plan");
    assert!(show.stderr.contains("damaged"), "{}", show.stderr);

    std::fs::remove_file(dir.join("smolfile.toml")).unwrap();
    std::fs::write(dir.join("extra"), "x").unwrap();
    let run = env.run(&["verify", "--json"]);
    assert_eq!(run.code, 1);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let problems = json["stages"][0]["problems"].to_string();
    assert!(
        problems.contains("\"missing\"") && problems.contains("smolfile.toml"),
        "{problems}"
    );
    assert!(
        problems.contains("\"unexpected\"") && problems.contains("extra"),
        "{problems}"
    );
}

#[test]
fn verify_catches_an_edited_spec() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]).trim().to_owned();
    tamper(&env.store().join(&id).join("spec.json"), |t| {
        t.replace("\"cpus\": 2", "\"cpus\": 3")
    });
    let run = env.run(&["verify", &id]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("spec.json: hashes to"),
        "{}",
        run.stdout
    );

    tamper(&env.store().join(&id).join("spec.json"), |t| {
        t.replace("\"cpus\": 3", "\"cpus\": 99")
    });
    let run = env.run(&["verify", &id]);
    assert!(
        run.stdout.contains("spec.json: 99 CPUs is out of range"),
        "{}",
        run.stdout
    );
}

#[test]
fn diff_summarises_then_shows_files() {
    let env = TestEnv::new();
    env.write("old.toml", MINIMAL);
    let old = env.ok(&["gen", "old.toml"]).trim().to_owned();
    env.write(
        "new.toml",
        &MINIMAL.replace(
            "image =",
            "cpus = 4\nenv = { FOO = \"1\" }\negress = { allow = [\"example.com\"] }\nimage =",
        ),
    );
    let same = env.run(&["diff", &old, "old.toml"]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    let run = env.run(&["diff", &old[..8], "new.toml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for expected in [
        "~ cpus: 2 -> 4",
        "+ env FOO: 1",
        "+ egress: example.com",
        "--- a/",
        "+++ b/",
        "+cpus = 4",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            run.stdout
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["diff", &old, "new.toml", "--json"]).stdout).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["identical"], false);
    assert!(json["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["file"] == "egress.toml"));
}

#[test]
fn help_teaches_and_lists_exit_codes() {
    let env = TestEnv::new();
    let help = env.ok(&["--help"]);
    assert!(
        help.contains("Exit codes:") && help.contains("bottle gen"),
        "{help}"
    );
    let run = env.run(&["frobnicate"]);
    assert_eq!(run.code, 2);
}

#[test]
fn gen_replaces_a_damaged_stage() {
    let env = TestEnv::new();
    env.write("bottle.toml", MINIMAL);
    let id = env.ok(&["gen"]).trim().to_owned();
    let smolfile = env.store().join(&id).join("smolfile.toml");
    tamper(&smolfile, |_| String::new());
    assert_eq!(env.run(&["verify"]).code, 1);
    let run = env.run(&["gen"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("replaced the damaged stage"),
        "{}",
        run.stderr
    );
    assert_eq!(env.run(&["verify"]).code, 0);
    assert_eq!(
        env.store_listing()
            .iter()
            .filter(|e| !e.contains('/'))
            .count(),
        1,
        "debris left"
    );
}
