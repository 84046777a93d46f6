//! Sidecars: the host-side services that are a bottle's only way out. The only modules besides
//! the runner that start processes or open sockets.

pub mod git;
