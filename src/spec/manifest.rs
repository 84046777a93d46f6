//! The manifest, `bottle.toml`, as the user wrote it: parsed strictly (every unknown key is an
//! error), validated value by value with the position of each value kept for the error, then
//! resolved for one agent.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::cidr::AddressRange;
use super::diagnostic::SpecError;
use super::host::HostPattern;
use super::resolved::{self, CustomSidecar, Egress, EgressEngine, ResolvedSpec, Supervise};
use super::validate::{self, Invalid};
use crate::stage::alloc::custom_url_env;
use crate::STAGE_FORMAT;

type SpannedMap = BTreeMap<Spanned<String>, Spanned<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    agents: BTreeMap<Spanned<String>, RawAgent>,
    #[serde(default)]
    bottles: BTreeMap<Spanned<String>, RawBottle>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    bottle: Spanned<String>,
    command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    env: SpannedMap,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBottle {
    image: Spanned<String>,
    cpus: Option<Spanned<i64>>,
    memory: Option<Spanned<toml::Value>>,
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    env: SpannedMap,
    egress: Option<RawEgress>,
    #[serde(default)]
    git: bool,
    supervise: Option<RawSupervise>,
    #[serde(default)]
    sidecars: BTreeMap<Spanned<String>, RawSidecar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    command: Spanned<Vec<Spanned<String>>>,
    guest_port: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    allow_addresses: Vec<Spanned<String>>,
    engine: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervise {
    command: Spanned<Vec<Spanned<String>>>,
}

/// A manifest that parsed and passed every value check. Bottles are validated whether or not an
/// agent uses them, so a manifest is valid or not as a whole.
#[derive(Debug)]
pub struct Manifest {
    file: String,
    text: String,
    agents: BTreeMap<String, Agent>,
    bottles: BTreeMap<String, Bottle>,
}

#[derive(Debug)]
struct Agent {
    bottle: Spanned<String>,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, Range<usize>>,
}

#[derive(Debug)]
struct Bottle {
    image: String,
    cpus: u8,
    memory_mib: u32,
    workdir: String,
    env: BTreeMap<String, String>,
    engine: EgressEngine,
    allow: BTreeSet<HostPattern>,
    allow_addresses: BTreeSet<AddressRange>,
    git: bool,
    supervise: Option<Vec<String>>,
    /// With the span of each name, to point at a clash with an agent's variables.
    sidecars: BTreeMap<String, (CustomSidecar, Range<usize>)>,
}

impl Manifest {
    /// `file` is how the manifest is named in errors; `text` is its content.
    pub fn parse(file: &str, text: &str) -> Result<Manifest, SpecError> {
        let raw = deserialize(file, text)?;
        let checker = Checker { file, text };
        let mut bottles = BTreeMap::new();
        for (name, bottle) in raw.bottles {
            checker.check(name.span(), validate::name(name.get_ref()))?;
            bottles.insert(name.into_inner(), checker.bottle(bottle)?);
        }
        let mut agents = BTreeMap::new();
        for (name, agent) in raw.agents {
            checker.check(name.span(), validate::name(name.get_ref()))?;
            let agent = checker.agent(agent)?;
            let Some(bottle) = bottles.get(agent.bottle.get_ref()) else {
                let known: Vec<&str> = bottles.keys().map(String::as_str).collect();
                let err = SpecError::at(
                    file,
                    text,
                    agent.bottle.span(),
                    format!(
                        "agent `{}` uses bottle `{}`, which is not defined",
                        name.get_ref(),
                        agent.bottle.get_ref()
                    ),
                );
                return Err(
                    match validate::did_you_mean(agent.bottle.get_ref(), known.iter().copied()) {
                        Some(near) => err.help(format!("did you mean `{near}`?")),
                        None => {
                            err.help(format!("define it as [bottles.{}]", agent.bottle.get_ref()))
                        }
                    },
                );
            };
            for (secret, span) in &agent.secrets {
                if agent.env.contains_key(secret) || bottle.env.contains_key(secret) {
                    return Err(SpecError::at(
                        file,
                        text,
                        span.clone(),
                        format!("`{secret}` is both a secret and a plain variable"),
                    )
                    .help(
                        "a secret's value comes from the host at run time; remove it from `env`",
                    ));
                }
            }
            for (sidecar, (_, span)) in &bottle.sidecars {
                let url_env = custom_url_env(sidecar);
                if agent.env.contains_key(&url_env)
                    || bottle.env.contains_key(&url_env)
                    || agent.secrets.contains_key(&url_env)
                {
                    return Err(SpecError::at(
                        file,
                        text,
                        span.clone(),
                        format!("sidecar `{sidecar}` gives the guest `{url_env}`, which agent `{}` also sets", name.get_ref()),
                    )
                    .help(format!("rename the sidecar or remove `{url_env}` from the agent's `env` or `secrets`")));
                }
            }
            agents.insert(name.into_inner(), agent);
        }
        if agents.is_empty() {
            return Err(SpecError::new(file, "the manifest defines no agent").help(
                "add one, as in:\n\n  [agents.claude]\n  bottle = \"default\"\n  command = [\"claude\"]\n\n  [bottles.default]\n  image = \"docker.io/library/node:22-bookworm\"",
            ));
        }
        Ok(Manifest {
            file: file.to_owned(),
            text: text.to_owned(),
            agents,
            bottles,
        })
    }

    pub fn agent_names(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    /// Resolves the chosen agent; `None` picks the only one.
    pub fn resolve(&self, agent: Option<&str>) -> Result<ResolvedSpec, SpecError> {
        let names = || {
            self.agent_names()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let name = match agent {
            Some(name) => name,
            None if self.agents.len() == 1 => self.agents.keys().next().expect("one agent"),
            None => {
                return Err(SpecError::new(
                    &self.file,
                    "the manifest defines several agents; choose one",
                )
                .help(format!("pass `--agent NAME` with one of {}", names())))
            }
        };
        let Some(agent_def) = self.agents.get(name) else {
            let err = SpecError::new(&self.file, format!("no agent `{name}` in the manifest"));
            return Err(match validate::did_you_mean(name, self.agent_names()) {
                Some(near) => err.help(format!("did you mean `{near}`?")),
                None => err.help(format!("the agents are {}", names())),
            });
        };
        let bottle = &self.bottles[agent_def.bottle.get_ref()];
        let mut env = bottle.env.clone();
        env.extend(agent_def.env.clone());
        let spec = ResolvedSpec {
            format: STAGE_FORMAT,
            agent: name.to_owned(),
            image: bottle.image.clone(),
            command: agent_def.command.clone(),
            workdir: bottle.workdir.clone(),
            cpus: bottle.cpus,
            memory_mib: bottle.memory_mib,
            env,
            secrets: agent_def.secrets.keys().cloned().collect(),
            egress: Egress {
                engine: bottle.engine,
                allow: bottle.allow.iter().cloned().collect(),
                allow_addresses: bottle.allow_addresses.iter().copied().collect(),
            },
            git: bottle.git,
            supervise: bottle
                .supervise
                .clone()
                .map(|command| Supervise { command }),
            sidecars: bottle
                .sidecars
                .iter()
                .map(|(n, (s, _))| (n.clone(), s.clone()))
                .collect(),
        };
        debug_assert!(spec.check().is_ok(), "manifest checks imply spec checks");
        Ok(spec)
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

fn deserialize(file: &str, text: &str) -> Result<RawManifest, SpecError> {
    let document = toml::de::DeTable::parse(text).map_err(|e| toml_error(file, text, &e, None))?;
    // Keep the parsed tree: when deserialisation fails, it tells which table the error is in.
    let tree = document.clone();
    RawManifest::deserialize(toml::de::Deserializer::from(document))
        .map_err(|e| toml_error(file, text, &e, Some(tree.get_ref())))
}

/// The keys leading to the deepest key or value whose span holds `offset`.
fn key_path_at(table: &toml::de::DeTable<'_>, offset: usize) -> Vec<String> {
    for (key, value) in table.iter() {
        let here = key.span().contains(&offset) || value.span().contains(&offset);
        // Tables opened by a `[header]` span only their header: look inside them regardless.
        let inner = match value.get_ref() {
            toml::de::DeValue::Table(inner) => key_path_at(inner, offset),
            _ => Vec::new(),
        };
        if !inner.is_empty() || here {
            let mut path = vec![key.get_ref().to_string()];
            path.extend(inner);
            return path;
        }
    }
    Vec::new()
}

fn table_name(path: &[String]) -> String {
    if path.is_empty() {
        " at the top level".to_owned()
    } else {
        format!(" in [{}]", path.join("."))
    }
}

/// Rewrites serde's wording into ours: "unknown field" becomes "unknown key" with a suggestion.
fn toml_error(
    file: &str,
    text: &str,
    error: &toml::de::Error,
    tree: Option<&toml::de::DeTable<'_>>,
) -> SpecError {
    let message = error.message().trim();
    let span = error.span().unwrap_or(0..0);
    let key_path = tree.map(|t| key_path_at(t, span.start)).unwrap_or_default();
    // The error sits on a key or value; its table is everything before that key.
    let table = key_path.len().saturating_sub(1);
    let path = if tree.is_some() {
        table_name(&key_path[..table])
    } else {
        String::new()
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let err = SpecError::at(file, text, span, format!("unknown key `{key}`{path}"));
        return match validate::did_you_mean(key, valid.iter().copied()) {
            Some(near) => err.help(format!("did you mean `{near}`?")),
            None if valid.is_empty() => err,
            None => err.help(format!(
                "valid keys here: {}",
                valid
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        let path = table_name(&key_path);
        return SpecError::at(file, text, span, format!("missing key `{key}`{path}"))
            .help(format!("add `{key} = …` to this table"));
    }
    if message.starts_with("invalid type") {
        let message = message
            .replace("expected a sequence", "expected a list")
            .replace("expected i64", "expected an integer")
            .replace("expected a map", "expected a table");
        let what = key_path
            .last()
            .map(|k| format!(" for `{k}`"))
            .unwrap_or_default();
        return SpecError::at(file, text, span, format!("{message}{what}{path}")).help(
            "check the value's type: strings are quoted, lists are in `[...]`, tables in `{...}`",
        );
    }
    SpecError::at(file, text, span, format!("{message}{path}"))
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn check<T>(&self, span: Range<usize>, result: Result<T, Invalid>) -> Result<T, SpecError> {
        result.map_err(|invalid| SpecError::invalid(self.file, self.text, span, invalid))
    }

    fn strings(
        &self,
        list: Vec<Spanned<String>>,
        check: fn(&str) -> Result<(), Invalid>,
    ) -> Result<Vec<String>, SpecError> {
        list.into_iter()
            .map(|item| {
                self.check(item.span(), check(item.get_ref()))?;
                Ok(item.into_inner())
            })
            .collect()
    }

    fn command(
        &self,
        command: Spanned<Vec<Spanned<String>>>,
        supervise: bool,
    ) -> Result<Vec<String>, SpecError> {
        let span = command.span();
        let argv = self.strings(command.into_inner(), |arg| {
            validate::no_nul("a command argument", arg)
        })?;
        let check = if supervise {
            validate::supervise_command
        } else {
            validate::command
        };
        self.check(span, check(&argv))?;
        Ok(argv)
    }

    fn env(&self, env: SpannedMap) -> Result<BTreeMap<String, String>, SpecError> {
        let mut out = BTreeMap::new();
        for (key, value) in env {
            self.check(key.span(), validate::user_env_key(key.get_ref()))?;
            self.check(value.span(), validate::no_nul("the value", value.get_ref()))?;
            out.insert(key.into_inner(), value.into_inner());
        }
        Ok(out)
    }

    fn agent(&self, raw: RawAgent) -> Result<Agent, SpecError> {
        let mut secrets = BTreeMap::new();
        for secret in raw.secrets {
            self.check(secret.span(), validate::user_env_key(secret.get_ref()))?;
            secrets.insert(secret.get_ref().clone(), secret.span());
        }
        Ok(Agent {
            bottle: raw.bottle,
            command: self.command(raw.command, false)?,
            env: self.env(raw.env)?,
            secrets,
        })
    }

    fn sidecars(
        &self,
        raw: BTreeMap<Spanned<String>, RawSidecar>,
    ) -> Result<BTreeMap<String, (CustomSidecar, Range<usize>)>, SpecError> {
        let mut out: BTreeMap<String, (CustomSidecar, Range<usize>)> = BTreeMap::new();
        for (name, sidecar) in raw {
            self.check(name.span(), validate::sidecar_name(name.get_ref()))?;
            let port_span = sidecar.guest_port.span();
            let guest_port = self.check(
                port_span.clone(),
                validate::guest_port(*sidecar.guest_port.get_ref()),
            )?;
            if let Some((other, _)) = out.iter().find(|(_, (s, _))| s.guest_port == guest_port) {
                return Err(SpecError::at(
                    self.file,
                    self.text,
                    port_span,
                    format!("sidecar `{other}` already uses guest port {guest_port}"),
                )
                .help("give each sidecar its own guest port"));
            }
            let command = self.command(sidecar.command, true)?;
            out.insert(
                name.get_ref().clone(),
                (
                    CustomSidecar {
                        command,
                        guest_port,
                    },
                    name.span(),
                ),
            );
        }
        Ok(out)
    }

    fn bottle(&self, raw: RawBottle) -> Result<Bottle, SpecError> {
        self.check(raw.image.span(), validate::image(raw.image.get_ref()))?;
        let cpus = match raw.cpus {
            Some(cpus) => self.check(cpus.span(), validate::cpus(*cpus.get_ref()))?,
            None => resolved::DEFAULT_CPUS,
        };
        let memory_mib = match raw.memory {
            Some(memory) => {
                let result = match memory.get_ref() {
                    toml::Value::Integer(mib) => validate::memory_mib(*mib),
                    toml::Value::String(text) => validate::memory_text(text),
                    other => Err(Invalid::new(format!(
                        "memory is a {}, not a size",
                        other.type_str()
                    ))
                    .help("write a size such as `4GiB`, `512MiB` or a number of MiB")),
                };
                self.check(memory.span(), result)?
            }
            None => resolved::DEFAULT_MEMORY_MIB,
        };
        let workdir = match raw.workdir {
            Some(dir) => {
                self.check(dir.span(), validate::workdir(dir.get_ref()))?;
                dir.into_inner()
            }
            None => resolved::DEFAULT_WORKDIR.to_owned(),
        };
        let egress = raw.egress.unwrap_or(RawEgress {
            allow: Vec::new(),
            allow_addresses: Vec::new(),
            engine: None,
        });
        let engine = match &egress.engine {
            None => EgressEngine::Builtin,
            Some(engine) => match engine.get_ref().as_str() {
                "builtin" => EgressEngine::Builtin,
                "pipelock" => EgressEngine::Pipelock,
                other => {
                    let invalid = Invalid::new(format!("unknown egress engine `{other}`"))
                        .help("the engines are `builtin` (the default) and `pipelock`");
                    return Err(SpecError::invalid(
                        self.file,
                        self.text,
                        engine.span(),
                        invalid,
                    ));
                }
            },
        };
        let engine_span = egress.engine.as_ref().map(|e| e.span());
        let mut allow = BTreeSet::new();
        for pattern in egress.allow {
            allow.insert(self.check(pattern.span(), pattern.get_ref().parse::<HostPattern>())?);
        }
        let mut allow_addresses = BTreeSet::new();
        for range in egress.allow_addresses {
            allow_addresses
                .insert(self.check(range.span(), range.get_ref().parse::<AddressRange>())?);
        }
        if let (EgressEngine::Pipelock, Some(span)) = (engine, engine_span) {
            let patterns: Vec<HostPattern> = allow.iter().cloned().collect();
            self.check(span, validate::pipelock_patterns(&patterns))?;
        }
        Ok(Bottle {
            image: raw.image.into_inner(),
            cpus,
            memory_mib,
            workdir,
            env: self.env(raw.env)?,
            engine,
            allow,
            allow_addresses,
            git: raw.git,
            sidecars: self.sidecars(raw.sidecars)?,
            supervise: raw
                .supervise
                .map(|s| self.command(s.command, true))
                .transpose()?,
        })
    }
}
