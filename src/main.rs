//! The `sealpost` binary: registers how freed memory goes back to the system, parses the command
//! line and runs the subcommand.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    sealpost::memory::set_release(release_freed_memory);
    sealpost::cli::main()
}

/// glibc's `malloc_trim(0)`: hands the free pages of every arena back to the system (madvise),
/// not only the top of each heap; true when some memory was released.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn release_freed_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers and touches only glibc's own allocator state, which
    // it locks arena by arena; it may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators give memory back by themselves, or not at all.
#[cfg(not(target_env = "gnu"))]
fn release_freed_memory() -> bool {
    false
}
