//! `cargo xtask dist`: documentation generated from the clap definitions, never written by hand:
//! shell completions (bash, zsh, fish) and a man page per command, into target/dist/.

use clap_complete::Shell;
use fs_err as fs;

use crate::root;

pub fn run() -> anyhow::Result<()> {
    let out = root().join("target/dist");
    let completions = out.join("completions");
    let man = out.join("man");
    fs::create_dir_all(&completions)?;
    fs::create_dir_all(&man)?;
    let mut command = bottle::cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut command, "bottle", &completions)?;
        println!("wrote {}", path.display());
    }
    clap_mangen::generate_to(command, &man)?;
    println!("wrote the man pages to {}", man.display());
    Ok(())
}
