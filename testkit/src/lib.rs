//! Test-only parts for bottle's end-to-end tests. Never used by bottle itself.
//!
//! - `contract`: smolvm's documented command lines, checked strictly (the stand-in's argv).
//! - `guest`: a smoltcp guest on gvproxy's VM socket, with the framing smolvm's NIC uses.
//! - `dns`: the few DNS bytes the probes need.
//! - `probes`: what the guest tries, and the report the tests read.

pub mod contract;
pub mod dns;
pub mod guest;
pub mod probes;
