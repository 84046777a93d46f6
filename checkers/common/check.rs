// Checks Smolfiles with the published `smolfile` crate at one exact version. Shared, through
// `include!`, by the checker crates of each version, which define `SMOLFILE_VERSION`.
//
// Usage: `BIN [--dump] FILE...`
//
// For each FILE: read it and run `smolfile::parse` on its text. On success
// print `ok FILE` on stdout (and, with `--dump`, the parsed structure in
// `{:#?}` form); on failure print `FILE: <error>` on stderr.
//
// Exit status: 0 if every file parsed, 1 if any file failed to parse,
// 2 on a usage error (no FILE, unknown option, or a file that cannot be read).

use std::process::ExitCode;

fn usage(bin: &str) -> String {
    format!(
        "usage: {bin} [--dump] FILE...\n\
         Parse each FILE as a Smolfile with smolfile {SMOLFILE_VERSION}.\n\
         Prints `ok FILE` per parsed file; `FILE: <error>` on stderr otherwise.\n\
         --dump      also print the parsed structure ({{:#?}})\n\
         --version   print the smolfile version in use\n\
         exit: 0 all parsed, 1 some failed, 2 usage error or unreadable file"
    )
}

fn main() -> ExitCode {
    let mut args = std::env::args();
    let bin = args
        .next()
        .unwrap_or_else(|| env!("CARGO_PKG_NAME").to_string());

    let mut dump = false;
    let mut files = Vec::new();
    let mut options_done = false;
    for arg in args {
        if !options_done && arg.starts_with('-') && arg != "-" {
            match arg.as_str() {
                "--" => options_done = true,
                "--dump" => dump = true,
                "-h" | "--help" => {
                    println!("{}", usage(&bin));
                    return ExitCode::SUCCESS;
                }
                "-V" | "--version" => {
                    println!("{} (smolfile {SMOLFILE_VERSION})", env!("CARGO_PKG_NAME"));
                    return ExitCode::SUCCESS;
                }
                _ => {
                    eprintln!("{bin}: unknown option {arg}\n{}", usage(&bin));
                    return ExitCode::from(2);
                }
            }
        } else {
            files.push(arg);
        }
    }
    if files.is_empty() {
        eprintln!("{}", usage(&bin));
        return ExitCode::from(2);
    }

    let mut any_failed = false;
    let mut any_unreadable = false;
    for file in &files {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                any_unreadable = true;
                continue;
            }
        };
        match smolfile::parse(&text) {
            Ok(parsed) => {
                println!("ok {file}");
                if dump {
                    println!("{parsed:#?}");
                }
            }
            Err(e) => {
                eprintln!("{file}: {}", e.to_string().trim_end());
                any_failed = true;
            }
        }
    }

    if any_unreadable {
        ExitCode::from(2)
    } else if any_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
