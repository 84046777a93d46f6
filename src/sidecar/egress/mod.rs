//! The built-in egress proxy: an allow-list HTTP/HTTPS forward proxy (CONNECT and absolute-form
//! HTTP) with an SSRF guard and an audit log. `decision` and `address` are pure; `resolve`,
//! `tunnel`, `sys` and `server` do the I/O; `audit` owns the log format. `bottle proxy` and the runner
//! both start it through [`serve`].

pub mod address;
pub mod audit;
pub mod decision;
pub mod resolve;
pub mod server;
pub mod sys;
pub mod tunnel;

pub use audit::AuditLog;
pub use resolve::{Override, Resolver};
pub use server::{serve, Limits, Options};
