//! Pure checks of single values. The same functions guard the manifest (where a failure is shown
//! at its line and column) and a stage's `spec.json` (where it means the stage was tampered with).

use std::fmt;

/// Why a value is not acceptable, and what would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub help: Option<String>,
}

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid {
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

pub const MAX_NAME_LEN: usize = 64;

/// Ports the gvproxy gateway serves itself (DNS, DHCP, its HTTP API): never a sidecar's.
pub const GATEWAY_PORTS: [u16; 3] = [53, 67, 80];
pub const EGRESS_GUEST_PORT: u16 = 3128;
pub const GIT_GUEST_PORT: u16 = 9418;
pub const SUPERVISE_GUEST_PORT: u16 = 8765;
const BUILTIN_SIDECARS: [&str; 3] = ["egress", "git", "supervise"];

/// A custom sidecar's name: a name that starts with a letter (its `<NAME>_URL` variable must be
/// a valid variable name) and is not one of the built-in sidecars.
pub fn sidecar_name(text: &str) -> Result<(), Invalid> {
    name(text)?;
    if !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(Invalid::new(format!(
            "sidecar name `{text}` does not start with a letter"
        ))
        .help("the guest gets its URL as `<NAME>_URL`, which must be a valid variable name"));
    }
    if BUILTIN_SIDECARS.contains(&text) {
        return Err(Invalid::new(format!("`{text}` is a built-in sidecar"))
            .help("use `egress`, `git = true` or `supervise` for those, and another name here"));
    }
    Ok(())
}

/// The port a custom sidecar is reached on from the guest.
pub fn guest_port(value: i64) -> Result<u16, Invalid> {
    let help = "choose a port from 1 to 65535 other than 53, 67 and 80 (gvproxy's gateway) \
                and 3128, 9418 and 8765 (bottle's own sidecars)";
    let port = u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Invalid::new(format!("{value} is not a port")).help(help))?;
    if GATEWAY_PORTS.contains(&port) {
        return Err(Invalid::new(format!("port {port} is served by gvproxy's gateway")).help(help));
    }
    if [EGRESS_GUEST_PORT, GIT_GUEST_PORT, SUPERVISE_GUEST_PORT].contains(&port) {
        return Err(Invalid::new(format!("port {port} belongs to a built-in sidecar")).help(help));
    }
    Ok(port)
}
pub const MIN_MEMORY_MIB: u32 = 64;
pub const MAX_MEMORY_MIB: u32 = 1024 * 1024;
pub const MAX_CPUS: i64 = 16;

/// Agent and bottle names become part of smolvm machine names: `[A-Za-z0-9_-]`, starting with a
/// letter or digit, no trailing `-` and no `--`.
pub fn name(text: &str) -> Result<(), Invalid> {
    let help = "a name is 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit, \
                with no `--` and no trailing `-`";
    let first_ok = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let chars_ok = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if text.is_empty()
        || text.len() > MAX_NAME_LEN
        || !first_ok
        || !chars_ok
        || text.ends_with('-')
        || text.contains("--")
    {
        return Err(Invalid::new(format!("invalid name `{}`", text.escape_debug())).help(help));
    }
    Ok(())
}

/// A POSIX-portable environment variable name.
pub fn env_key(text: &str) -> Result<(), Invalid> {
    let mut chars = text.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(
            Invalid::new(format!("invalid variable name `{}`", text.escape_debug()))
                .help("a variable name is letters, digits and `_`, not starting with a digit"),
        );
    }
    Ok(())
}

/// Variables the bottle sets itself, so that the guest's way out cannot be redirected by accident.
pub const RESERVED_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "https_proxy",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "GIT_GATE_URL",
    "MCP_SUPERVISE_URL",
];

pub fn user_env_key(text: &str) -> Result<(), Invalid> {
    env_key(text)?;
    if RESERVED_ENV.contains(&text) {
        return Err(Invalid::new(format!("`{text}` is set by bottle itself"))
            .help("the guest's proxy and sidecar variables point at the bottle's own sidecars; remove this key"));
    }
    Ok(())
}

pub fn no_nul(what: &str, text: &str) -> Result<(), Invalid> {
    if text.contains('\0') {
        return Err(Invalid::new(format!("{what} contains a NUL character"))
            .help("NUL cannot be passed through an environment or a command line"));
    }
    Ok(())
}

pub fn image(text: &str) -> Result<(), Invalid> {
    if text.is_empty()
        || text.len() > 512
        || text.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(
            Invalid::new(format!("invalid image reference `{}`", text.escape_debug()))
                .help("write an OCI reference such as `docker.io/library/node:22-bookworm`"),
        );
    }
    Ok(())
}

pub fn command(argv: &[String]) -> Result<(), Invalid> {
    match argv.first() {
        None => Err(Invalid::new("the command is empty")
            .help("write the program and its arguments, as in `[\"claude\", \"--help\"]`")),
        Some(program) if program.is_empty() => Err(Invalid::new("the program name is empty")),
        Some(_) => argv
            .iter()
            .try_for_each(|arg| no_nul("a command argument", arg)),
    }
}

/// pipelock has no notion of ports: a pattern that names one would silently allow every port.
pub fn pipelock_patterns(patterns: &[super::host::HostPattern]) -> Result<(), Invalid> {
    match patterns.iter().find(|p| p.port.is_some()) {
        Some(pattern) => Err(Invalid::new(format!(
            "`{pattern}` names a port, and pipelock cannot restrict ports"
        ))
        .help("remove the port (pipelock then allows every port of the host), or use the built-in engine")),
        None => Ok(()),
    }
}

/// A host command that must be told its port through `{port}`.
pub fn supervise_command(argv: &[String]) -> Result<(), Invalid> {
    command(argv)?;
    if !argv.iter().any(|arg| arg.contains("{port}")) {
        return Err(
            Invalid::new("the supervise command never mentions `{port}`").help(
                "bottle picks the host port at run time and passes it where `{port}` appears, \
                   as in `[\"my-supervisor\", \"--listen\", \"127.0.0.1:{port}\"]`",
            ),
        );
    }
    Ok(())
}

pub fn workdir(text: &str) -> Result<(), Invalid> {
    let help = "write an absolute path inside the VM, such as `/workspace`";
    if !text.starts_with('/') {
        return Err(
            Invalid::new(format!("workdir `{}` is not absolute", text.escape_debug())).help(help),
        );
    }
    no_nul("workdir", text)?;
    if text.contains(':') || text.chars().any(char::is_control) {
        return Err(Invalid::new("workdir contains `:` or a control character").help(help));
    }
    let normal = text.len() == 1
        || (!text.ends_with('/') && text[1..].split('/').all(|c| !matches!(c, "" | "." | "..")));
    if !normal {
        return Err(
            Invalid::new(format!("workdir `{text}` is not a normalised path"))
                .help("no `.` or `..` components, no `//`, no trailing `/`"),
        );
    }
    Ok(())
}

pub fn cpus(value: i64) -> Result<u8, Invalid> {
    if (1..=MAX_CPUS).contains(&value) {
        Ok(value as u8)
    } else {
        Err(Invalid::new(format!("{value} CPUs is out of range"))
            .help("cpus is a whole number from 1 to 16"))
    }
}

const MEMORY_HELP: &str = "write a size such as `4GiB`, `512MiB` or a number of MiB; \
                           at least 64 MiB, at most 1 TiB";

/// A memory size, as a whole number of MiB or a string with a binary unit.
pub fn memory_mib(value: i64) -> Result<u32, Invalid> {
    if value < i64::from(MIN_MEMORY_MIB) {
        return Err(Invalid::new(format!(
            "{value} MiB of memory is below smolvm's floor of 64 MiB"
        ))
        .help(MEMORY_HELP));
    }
    if value > i64::from(MAX_MEMORY_MIB) {
        return Err(
            Invalid::new(format!("{value} MiB of memory is more than 1 TiB")).help(MEMORY_HELP),
        );
    }
    Ok(value as u32)
}

pub fn memory_text(text: &str) -> Result<u32, Invalid> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale: Option<u64> = match unit.trim() {
        "" | "M" | "MiB" => Some(1),
        "G" | "GiB" => Some(1024),
        "T" | "TiB" => Some(1024 * 1024),
        _ => None,
    };
    let bad = || Invalid::new(format!("`{text}` is not a memory size")).help(MEMORY_HELP);
    let (Some(scale), Ok(number)) = (scale, number.parse::<u64>()) else {
        return Err(match unit.trim() {
            "MB" | "GB" | "mb" | "gb" | "m" | "g" => Invalid::new(format!("`{text}` is ambiguous"))
                .help("bottle takes binary units only: MiB or GiB"),
            _ => bad(),
        });
    };
    let mib = number.checked_mul(scale).ok_or_else(bad)?;
    memory_mib(i64::try_from(mib).map_err(|_| bad())?)
}

/// Candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_smolvm_rules() {
        for good in ["a", "claude", "my_agent-2", "A1"] {
            assert!(name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "_a", "a-", "a--b", "a.b", "ä", &"x".repeat(65)] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_spellings() {
        assert_eq!(memory_text("4GiB"), Ok(4096));
        assert_eq!(memory_text("4096MiB"), Ok(4096));
        assert_eq!(memory_text("4 GiB"), Ok(4096));
        assert_eq!(memory_text("64"), Ok(64));
        assert!(memory_text("63MiB").is_err());
        assert!(memory_text("4GB")
            .unwrap_err()
            .message
            .contains("ambiguous"));
        assert!(memory_text("lots").is_err());
        assert!(memory_text("99999999999999999999GiB").is_err());
        assert!(memory_mib(2 * 1024 * 1024).is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("cpu", ["image", "cpus", "memory"]),
            Some("cpus")
        );
        assert_eq!(did_you_mean("zzzzzz", ["image", "cpus"]), None);
    }

    #[test]
    fn workdirs() {
        assert!(workdir("/workspace").is_ok());
        assert!(workdir("/").is_ok());
        for bad in ["workspace", "/a/../b", "/a/", "/a//b", "/a:b", "/a\nb"] {
            assert!(workdir(bad).is_err(), "{bad:?}");
        }
    }
}
