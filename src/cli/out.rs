//! Standard output of the commands: a reader that closes the pipe early (`| head`) ends the
//! command quietly with status 141, as SIGPIPE ends other Unix tools, never with a panic.

use std::fmt;
use std::io::{self, Write};

/// The exit status after the reader of standard output went away (128 + SIGPIPE).
pub const CLOSED_PIPE: u8 = 141;

/// Writes formatted text to standard output (`out!` / `outln!`).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        stop(&e);
    }
}

/// Writes bytes to standard output.
pub fn write_bytes(bytes: &[u8]) {
    if let Err(e) = io::stdout().lock().write_all(bytes) {
        stop(&e);
    }
}

/// Whether an error (anywhere in its chain) is a closed standard output.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn stop(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_PIPE.into());
    }
    eprintln!("sealpost: writing to standard output: {e}");
    std::process::exit(1);
}

/// `print!` for the commands, through [`write_fmt`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write_fmt(format_args!($($arg)*)) };
}

/// `println!` for the commands, through [`write_fmt`].
macro_rules! outln {
    () => { $crate::cli::out::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
