//! Who a client is: users, their password hashes (argon2) and the senders each may use. Shared by
//! every listener that authenticates (SMTP submission today).

use std::fmt;

mod argon_pool;
pub mod users;

pub use users::{check_hash, hash_password, SenderLogins, Users};

/// A username and password from AUTH. Debug output never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}
