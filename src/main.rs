//! The `sealpost` binary: parses the command line and runs the subcommand.

fn main() -> std::process::ExitCode {
    sealpost::cli::main()
}
