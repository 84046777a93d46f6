//! Host-side sidecars: the processes and servers a bottle's guest may reach. This is one of the two
//! layers (with the runner) that open sockets; it never reads manifests, only a stage's files.

pub mod egress;
