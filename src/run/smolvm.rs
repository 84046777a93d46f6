//! smolvm: the only module that names smolvm's subcommands and flags. It detects the external
//! network contract from `machine create --help` and builds every command line the runner uses.
//! It never spawns anything itself, and never builds a command without the contained NIC: there
//! is no TSI path to fall back to.
//!
//! The sequence of one run: `machine create --name N --smolfile F --net --net-backend virtio-net
//! --net-unixstream S --net-address A/P --net-gateway G --net-dns D --net-mac M --volume W:WORKDIR`,
//! `machine start --name N`, `machine exec --name N [--interactive --tty] -- COMMAND` in the
//! foreground (its exit code is the guest's), then `machine stop --name N` and
//! `machine delete --name N -f`. The external network flags are the fork's documented contract;
//! `--volume` and `exec`'s `--interactive --tty` follow upstream smolvm's CLI and are the first
//! things to check against a real install (the stand-in in `testkit` accepts exactly this).

use std::path::Path;

use serde::Serialize;

use super::gvproxy::GuestNetwork;

/// The flags of the external network contract (the joshuarli/smolvm fork of 1.9.2): without all
/// of them smolvm would give the VM TSI, a direct line to the host's network.
pub const EXTERNAL_NETWORK_FLAGS: [&str; 5] = [
    "--net-unixstream",
    "--net-address",
    "--net-gateway",
    "--net-dns",
    "--net-mac",
];

pub fn help_args() -> [&'static str; 3] {
    ["machine", "create", "--help"]
}

/// The contract's flags missing from `smolvm machine create --help`; empty when supported.
pub fn missing_contract_flags(help: &str) -> Vec<&'static str> {
    EXTERNAL_NETWORK_FLAGS
        .into_iter()
        .filter(|flag| {
            !help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
                .any(|word| word == *flag)
        })
        .collect()
}

/// Every smolvm command line of one run, in the order the runner uses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commands {
    /// Removes a machine a crashed run may have left; its failure is ignored.
    pub clear: Vec<String>,
    pub create: Vec<String>,
    pub start: Vec<String>,
    /// Runs the stage's command in the foreground; its exit code is the guest's.
    pub exec: Vec<String>,
    pub stop: Vec<String>,
    pub delete: Vec<String>,
}

pub struct Machine<'a> {
    pub name: &'a str,
    pub smolfile: &'a Path,
    pub vm_socket: &'a Path,
    pub network: &'a GuestNetwork,
    pub workspace: &'a Path,
    pub workdir: &'a str,
    pub command: &'a [String],
    pub terminal: bool,
}

pub fn commands(machine: &Machine<'_>) -> Commands {
    let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let name = machine.name;
    let net = machine.network;
    let mut create = owned(&["machine", "create", "--name", name, "--smolfile"]);
    create.push(machine.smolfile.display().to_string());
    create.extend(owned(&["--net", "--net-backend", "virtio-net"]));
    create.extend([
        "--net-unixstream".to_owned(),
        machine.vm_socket.display().to_string(),
        "--net-address".to_owned(),
        format!("{}/{}", net.address, net.prefix),
        "--net-gateway".to_owned(),
        net.gateway.to_string(),
        "--net-dns".to_owned(),
        net.dns.to_string(),
        "--net-mac".to_owned(),
        net.mac.to_string(),
        "--volume".to_owned(),
        format!("{}:{}", machine.workspace.display(), machine.workdir),
    ]);
    let mut exec = owned(&["machine", "exec", "--name", name]);
    if machine.terminal {
        exec.extend(owned(&["--interactive", "--tty"]));
    }
    exec.push("--".to_owned());
    exec.extend(machine.command.iter().cloned());
    Commands {
        clear: owned(&["machine", "delete", "--name", name, "-f"]),
        create,
        start: owned(&["machine", "start", "--name", name]),
        exec,
        stop: owned(&["machine", "stop", "--name", name]),
        delete: owned(&["machine", "delete", "--name", name, "-f"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::alloc::MacAddr;

    #[test]
    fn the_contract_is_found_in_clap_style_help() {
        let help = "Options:\n      --net-unixstream <PATH>  attach\n      --net-address <CIDR>\n      --net-gateway <IP>\n      --net-dns <IP>\n      --net-mac <MAC>\n";
        assert!(missing_contract_flags(help).is_empty());
        let old = "Options:\n      --net  enable\n      --net-backend <B>\n";
        assert_eq!(missing_contract_flags(old), EXTERNAL_NETWORK_FLAGS.to_vec());
        // A flag named only as a prefix of another does not count.
        assert_eq!(
            missing_contract_flags(
                "--net-unixstream-x --net-address --net-gateway --net-dns --net-mac"
            ),
            vec!["--net-unixstream"]
        );
    }

    #[test]
    fn create_always_carries_the_whole_contained_nic() {
        let network = GuestNetwork {
            address: "10.1.2.2".parse().unwrap(),
            prefix: 24,
            gateway: "10.1.2.1".parse().unwrap(),
            dns: "10.1.2.1".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            proxy_ip: "10.1.2.254".parse().unwrap(),
        };
        let command = vec!["sh".to_owned()];
        let commands = commands(&Machine {
            name: "b-x",
            smolfile: Path::new("/s/smolfile.toml"),
            vm_socket: Path::new("/r/gv/vm.sock"),
            network: &network,
            workspace: Path::new("/w"),
            workdir: "/workspace",
            command: &command,
            terminal: false,
        });
        let create = commands.create.join(" ");
        assert!(create.contains("--net --net-backend virtio-net --net-unixstream /r/gv/vm.sock"));
        assert!(create.contains("--net-address 10.1.2.2/24 --net-gateway 10.1.2.1 --net-dns 10.1.2.1 --net-mac 02:00:00:00:00:02"));
        assert!(create.contains("--volume /w:/workspace"));
        assert_eq!(
            commands.exec,
            ["machine", "exec", "--name", "b-x", "--", "sh"]
        );
    }
}
