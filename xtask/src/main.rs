//! Project automation, run as `cargo xtask <task>` (an alias in .cargo/config.toml).
//!
//! bench-egress  the egress proxy against a direct connection and tinyproxy (temporary entry
//!               point until `cargo xtask bench` calls `bench_egress::run`)

mod bench_egress;

fn main() -> std::process::ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "bench-egress" => bench_egress::run(),
        _ => {
            eprintln!("usage: cargo xtask bench-egress");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
