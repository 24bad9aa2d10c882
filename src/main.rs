//! The `sealpost` binary: parses the command line and runs the subcommand.

/// mimalloc instead of glibc's malloc: glibc keeps freed memory in per-thread arenas (a password
/// check's 19 MiB argon2 buffer stays resident in every blocking thread that ever ran one, and
/// idle sessions' memory is not returned after they close); mimalloc returns freed pages to the
/// system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sealpost::cli::main()
}
