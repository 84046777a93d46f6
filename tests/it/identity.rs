//! The id's contract, as properties: how a manifest is written (key and table order, comments,
//! whitespace, equal spellings, agents and bottles this agent does not use) never changes it;
//! any change of meaning does.

use std::collections::BTreeMap;

use proptest::prelude::*;

use bottle::spec::Manifest;
use bottle::stage::StageId;

#[derive(Debug, Clone)]
struct Model {
    agent: String,
    image: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    cpus: u8,
    memory_mib: u32,
    hosts: Vec<String>,
    git: bool,
    supervise: bool,
}

/// How the same model is written down.
#[derive(Debug, Clone)]
struct Style {
    order_seed: u64,
    comments: bool,
    env_as_table: bool,
    memory_spelling: u8,
    upper_hosts: bool,
    unrelated: bool,
    bottle_first: bool,
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| quoted(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

fn write(model: &Model, style: &Style) -> String {
    let memory = match style.memory_spelling % 3 {
        0 => model.memory_mib.to_string(),
        1 => quoted(&format!("{}MiB", model.memory_mib)),
        _ if model.memory_mib.is_multiple_of(1024) => {
            quoted(&format!("{}GiB", model.memory_mib / 1024))
        }
        _ => quoted(&format!("{} MiB", model.memory_mib)),
    };
    let hosts: Vec<String> = model
        .hosts
        .iter()
        .map(|h| {
            if style.upper_hosts {
                h.to_uppercase()
            } else {
                h.clone()
            }
        })
        .collect();
    let comment = |text: &str| {
        if style.comments {
            format!("   # {text}\n# a comment line\n\n")
        } else {
            "\n".to_owned()
        }
    };

    let mut agent_lines = vec![
        format!("bottle = \"the-bottle\"{}", comment("which bottle")),
        format!("command = {}{}", list(&model.command), comment("argv")),
        format!("secrets = {}\n", list(&model.secrets)),
    ];
    let mut bottle_lines = vec![
        format!("image = {}\n", quoted(&model.image)),
        format!("cpus = {}{}", model.cpus, comment("cpus")),
        format!("memory = {memory}\n"),
        format!("egress = {{ allow = {} }}\n", list(&hosts)),
        format!("git = {}\n", model.git),
    ];
    if model.supervise {
        bottle_lines.push("supervise = { command = [\"sup\", \"{port}\"] }\n".to_owned());
    }
    let env_inline = format!(
        "env = {{ {} }}\n",
        model
            .env
            .iter()
            .map(|(k, v)| format!("{k} = {}", quoted(v)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !style.env_as_table {
        agent_lines.push(env_inline);
    }
    shuffle(&mut agent_lines, style.order_seed);
    shuffle(&mut bottle_lines, style.order_seed.rotate_left(17));

    let mut agent = format!("[agents.{}]\n{}", model.agent, agent_lines.concat());
    if style.env_as_table {
        let mut env: Vec<String> = model
            .env
            .iter()
            .map(|(k, v)| format!("{k}   =   {}\n", quoted(v)))
            .collect();
        shuffle(&mut env, style.order_seed);
        agent.push_str(&format!("\n[agents.{}.env]\n{}", model.agent, env.concat()));
    }
    let bottle = format!("[bottles.the-bottle]\n{}", bottle_lines.concat());
    let unrelated = if style.unrelated {
        "\n[agents.zz-other]\nbottle = \"other\"\ncommand = [\"x\"]\n\n[bottles.other]\nimage = \"busybox\"\ncpus = 7\n"
    } else {
        ""
    };
    if style.bottle_first {
        format!("{bottle}\n{unrelated}\n{agent}")
    } else {
        format!("{agent}\n\n{bottle}{unrelated}")
    }
}

fn id_of(text: &str, agent: &str) -> StageId {
    let manifest =
        Manifest::parse("prop.toml", text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    let spec = manifest.resolve(Some(agent)).unwrap();
    StageId::of_canonical_spec(&spec.canonical_bytes())
}

fn model() -> impl Strategy<Value = Model> {
    let host = prop::sample::select(vec![
        "api.anthropic.com",
        "*.githubusercontent.com",
        "registry.npmjs.org:443",
        "example.org:8080",
        "10.0.0.1",
        "[2001:db8::1]:443",
    ]);
    (
        "[a-z][a-z0-9_]{0,8}",
        "[a-z]{1,8}(:[a-z0-9]{1,4})?",
        prop::collection::vec("[ -~]{0,10}", 0..3),
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,5}", "\\PC{0,12}", 0..4),
        prop::collection::btree_set("S[A-Z0-9_]{0,5}", 0..3),
        1u8..=16,
        prop_oneof![64u32..=4096, (1u32..=16).prop_map(|g| g * 1024)],
        prop::collection::vec(host, 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(agent, image, args, env, secrets, cpus, memory_mib, hosts, git, supervise)| {
                let mut command = vec!["agent".to_owned()];
                command.extend(args);
                let env = env
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with('S') && !k.contains("PROXY"))
                    .collect();
                Model {
                    agent: if agent == "zz-other" {
                        "a".into()
                    } else {
                        agent
                    },
                    image,
                    command,
                    env,
                    secrets: secrets.into_iter().collect(),
                    cpus,
                    memory_mib,
                    hosts: hosts.into_iter().map(str::to_owned).collect(),
                    git,
                    supervise,
                }
            },
        )
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                order_seed,
                comments,
                env_as_table,
                memory_spelling,
                upper_hosts,
                unrelated,
                bottle_first,
            )| Style {
                order_seed,
                comments,
                env_as_table,
                memory_spelling,
                upper_hosts,
                unrelated,
                bottle_first,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn spelling_never_changes_the_id(model in model(), a in style(), b in style()) {
        prop_assert_eq!(id_of(&write(&model, &a), &model.agent), id_of(&write(&model, &b), &model.agent));
    }

    #[test]
    fn meaning_always_changes_the_id(model in model(), style in style(), change in 0u8..9) {
        let mut other = model.clone();
        match change {
            0 => other.image.push('x'),
            1 => other.cpus = if model.cpus == 16 { 1 } else { model.cpus + 1 },
            2 => other.memory_mib += 1,
            3 => other.command.push("--more".into()),
            4 => { other.env.insert("ZCHANGED".into(), "1".into()); }
            5 => other.secrets.push("SNEW9XYZ".into()),
            6 => other.git = !model.git,
            7 => other.supervise = !model.supervise,
            _ => other.hosts.push("new.example.net".into()),
        }
        prop_assert_ne!(id_of(&write(&model, &style), &model.agent), id_of(&write(&other, &style), &model.agent));
    }
}

#[test]
fn equal_spellings_of_memory_and_hosts() {
    let base = "[agents.a]\nbottle = \"b\"\ncommand = [\"x\"]\n[bottles.b]\nimage = \"i\"\n";
    let a = id_of(
        &format!("{base}memory = \"4GiB\"\negress = {{ allow = [\"X.org\", \"x.org\"] }}\n"),
        "a",
    );
    let b = id_of(
        &format!("{base}memory = 4096\negress = {{ allow = [\"x.org\"] }}\n"),
        "a",
    );
    let c = id_of(
        &format!("{base}memory = \"4096MiB\"\n\n\n# hi\negress.allow = [\"x.ORG\"]\n"),
        "a",
    );
    assert_eq!(a, b);
    assert_eq!(b, c);
}

/// A pinned value: if this changes, so does every id ever generated; that requires a format bump.
#[test]
fn a_known_id() {
    let text =
        std::fs::read_to_string(crate::support::repo().join("examples/minimal.toml")).unwrap();
    assert_eq!(
        id_of(&text, "shell").to_string(),
        "b4e6f9f9d5a7c32e93d1a667a59fa1ef"
    );
}
