//! Pure SMTP protocol pieces: replies, command parsing and the DATA receiver (no I/O).

pub mod address;
pub mod command;
pub mod data;
pub mod dsn;
pub mod line;
pub mod reply;

pub use command::{Command, MailFrom, RcptTo};
pub use data::{BareNewline, DataError, DataReceiver, MAX_TEXT_LINE};
pub use line::{LineEvent, LineReader, MAX_COMMAND_LINE};
pub use reply::Reply;
