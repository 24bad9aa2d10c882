//! Pure SMTP protocol pieces: replies, command parsing and the DATA receiver (no I/O).

pub mod command;
pub mod data;
pub mod line;

pub use crate::mail::{address, dsn, reply, BareNewline, Reply};

pub use command::{Command, MailFrom, RcptTo};
pub use data::{DataError, DataReceiver, MAX_TEXT_LINE};
pub use line::{LineEvent, LineReader, MAX_COMMAND_LINE};
