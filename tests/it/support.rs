//! `TestEnv`: a temporary working directory, a store inside it, and the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BOTTLE: &str = env!("CARGO_BIN_EXE_bottle");

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("stages")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BOTTLE);
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("BOTTLE_STORE");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run bottle").into()
    }

    /// Runs and insists on exit 0, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "bottle {args:?} failed:\n{}", run.stderr);
        run.stdout
    }

    /// Every entry below the store, relative, sorted: to prove what was (not) written.
    pub fn store_listing(&self) -> Vec<String> {
        let store = self.store();
        if !store.exists() {
            return Vec::new();
        }
        let mut entries: Vec<String> = walkdir::WalkDir::new(&store)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(&store)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        entries.sort();
        entries
    }
}

pub const MINIMAL: &str = r#"
[agents.a]
bottle = "b"
command = ["sh"]

[bottles.b]
image = "docker.io/library/alpine:3.20"
"#;
