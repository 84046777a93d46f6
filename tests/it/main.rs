//! The integration tests: one binary, driving the real `bottle` executable in a fresh temporary
//! directory through `TestEnv`, and reading the repository's golden cases and committed stages.

mod assignments;
mod cli;
mod concurrency;
mod egress;
mod git_gateway;
mod golden;
mod identity;
mod lifecycle;
mod rendering;
mod runner;
mod smolfile_parsers;
mod support;
