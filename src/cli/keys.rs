//! `sealpost keys`: generate key material.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Generate a test PKI: a CA and an RSA-2048 server certificate per host.
    ///
    /// Writes ca.crt, ca.key and <host>.crt, <host>.key into DIR (keys with mode 0600).
    /// `sealpost keys pki --out fixtures/pki` regenerates the fixtures' PKI.
    Pki {
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Host names to issue certificates for.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "mx.contoso.test,mx.fabrikam.test"
        )]
        hosts: Vec<String>,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Pki { out, hosts } => {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            crate::tls::pki::generate(&out, &hosts)?;
            println!(
                "wrote ca.crt, ca.key and certificates for {} into {}",
                hosts.join(", "),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
