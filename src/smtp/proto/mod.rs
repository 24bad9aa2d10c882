//! Pure SMTP protocol pieces: replies, command parsing and the DATA receiver (no I/O).

pub mod reply;

pub use reply::Reply;
