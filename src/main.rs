//! The `provisioner` binary: parse the command line, then hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = openstack_provisioner::cli::Cli::parse();
    openstack_provisioner::cli::main(cli)
}
