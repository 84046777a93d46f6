//! A stand-in `smolvm` for bottle's tests only. It accepts exactly the documented command lines
//! (see `bottle_testkit::contract`), keeps machines in `$SMOLVM_DATA_DIR`, and on
//! `machine exec` becomes the guest: it attaches to the `--net-unixstream` socket given at
//! create time, runs the probes of `$FAKE_SMOLVM_PROBES`, writes their report, and exits with
//! the code the probes file names. Any deviation prints `Error: …` and exits 1, like smolvm.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use bottle_testkit::contract::{self, Machine};
use bottle_testkit::guest::Guest;
use bottle_testkit::probes;

fn main() -> ExitCode {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args, started) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

fn state_dir() -> Result<PathBuf, String> {
    std::env::var_os("SMOLVM_DATA_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| {
            "SMOLVM_DATA_DIR is not set (the stand-in keeps no state elsewhere)".to_owned()
        })
}

fn machine_path(name: &str) -> Result<PathBuf, String> {
    Ok(state_dir()?.join(format!("{name}.json")))
}

fn load(name: &str) -> Result<Machine, String> {
    let bytes = std::fs::read(machine_path(name)?)
        .map_err(|_| format!("machine `{name}` does not exist"))?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn save(machine: &Machine) -> Result<(), String> {
    std::fs::create_dir_all(state_dir()?).map_err(|e| e.to_string())?;
    let bytes = serde_json::to_vec_pretty(machine).map_err(|e| e.to_string())?;
    std::fs::write(machine_path(&machine.name)?, bytes).map_err(|e| e.to_string())
}

fn log_call(args: &[String]) {
    if let Ok(dir) = state_dir() {
        let _ = std::fs::create_dir_all(&dir);
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("calls.log"))
        {
            let _ = writeln!(f, "{}", args.join(" "));
        }
    }
}

fn run(args: &[String], started: u128) -> Result<u8, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    if words.len() >= 3 && words[0] == "machine" && words[2] == "--help" {
        print!("{}", contract::CREATE_HELP);
        return Ok(0);
    }
    log_call(args);
    // No secret value may ever be on a command line.
    for (key, value) in std::env::vars() {
        if key.starts_with("BOTTLE_TEST_SECRET") && args.iter().any(|a| a.contains(&value)) {
            return Err(format!("the value of {key} is on the command line"));
        }
    }
    match words.as_slice() {
        ["machine", "create", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let machine = contract::check_create(&rest)?;
            if machine_path(&machine.name)?.exists() {
                return Err(format!("machine `{}` already exists", machine.name));
            }
            save(&machine)?;
            Ok(0)
        }
        ["machine", "start", rest @ ..] => {
            let name = contract::check_named(
                &rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &[],
            )?;
            let mut machine = load(&name)?;
            machine.started = true;
            save(&machine)?;
            Ok(0)
        }
        ["machine", "stop", rest @ ..] => {
            let name = contract::check_named(
                &rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &[],
            )?;
            let mut machine = load(&name)?;
            machine.started = false;
            save(&machine)?;
            Ok(0)
        }
        ["machine", "delete", rest @ ..] => {
            let name = contract::check_named(
                &rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &["-f"],
            )?;
            let _ = std::fs::remove_file(machine_path(&name)?);
            Ok(0)
        }
        ["machine", "exec", rest @ ..] => {
            let split = rest
                .iter()
                .position(|a| *a == "--")
                .ok_or("exec needs `--` and a command")?;
            let (flags, command) = (&rest[..split], &rest[split + 1..]);
            let name = contract::check_named(
                &flags.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &["--interactive", "--tty"],
            )?;
            let machine = load(&name)?;
            if !machine.started {
                return Err(format!("machine `{name}` is not running"));
            }
            if command
                != machine
                    .entrypoint
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
            {
                return Err(format!(
                    "exec runs {command:?}, not the Smolfile's entrypoint {:?}",
                    machine.entrypoint
                ));
            }
            become_guest(&machine, started)
        }
        _ => Err(format!("unknown command `{}`", args.join(" "))),
    }
}

fn become_guest(machine: &Machine, started: u128) -> Result<u8, String> {
    let probes_path =
        std::env::var_os("FAKE_SMOLVM_PROBES").ok_or("FAKE_SMOLVM_PROBES is not set")?;
    let config: probes::Config =
        serde_json::from_slice(&std::fs::read(&probes_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if let Some(path) = std::env::var_os("FAKE_SMOLVM_STARTED") {
        std::fs::write(path, started.to_string()).map_err(|e| e.to_string())?;
    }
    let mut guest = Guest::attach(
        &machine.socket,
        machine.mac,
        machine.address,
        machine.prefix,
        machine.gateway,
    )
    .map_err(|e| format!("cannot attach to `{}`: {e}", machine.socket.display()))?;
    if config.hold_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(config.hold_ms));
    }
    let report = probes::run(&mut guest, machine, &config);
    std::fs::write(
        &config.report,
        serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    Ok(config.exit_code.clamp(0, 255) as u8)
}
