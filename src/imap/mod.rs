//! The IMAP4rev2 server (RFC 9051): a pure session fed bytes that answers with actions, the
//! FETCH and SEARCH pieces it uses, and the listener that drives it over sockets. Commands are
//! decoded and responses encoded by `imap-codec`; mailboxes are reached through the store's
//! `Folders` trait.

mod commands;
pub mod fetch;
pub mod listener;
mod reply;
mod search;
pub mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use listener::{ImapContext, LoginFailures};
pub use session::{Action, Session};

use crate::config::{Config, Listener, ListenerProtocol};
use crate::net::limits::ConnectionLimits;
use crate::store::Folders;
use crate::telemetry::Telemetry;

/// What every session of a listener shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    /// STARTTLS is offered (a certificate is configured and TLS is not implicit).
    pub starttls: bool,
    /// The longest command line (without literals).
    pub max_line: usize,
    /// The longest literal (APPEND): the server's maximum message size.
    pub max_literal: u32,
    /// Lowercase user name → the mailboxes (addresses) it reads; the first is its own.
    pub mailboxes: BTreeMap<String, Vec<String>>,
}

/// A command line longer than this is refused (64 KiB).
pub const MAX_LINE: usize = 64 * 1024;

/// RFC 9051 §5.4: the autologout timer is at least 30 minutes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What an IMAP listener's connections share, from the configuration.
pub fn context(
    config: &Config,
    listener: &Listener,
    store: Arc<dyn Folders>,
    limits: Arc<ConnectionLimits>,
    failures: Arc<LoginFailures>,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Arc<ImapContext>> {
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::server_config(
            &files.key,
            files.min_version,
            false,
            files.session_tickets,
        )?),
        None => None,
    };
    let implicit_tls = listener.protocol == ListenerProtocol::Imaps;
    Ok(Arc::new(ImapContext {
        session: Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            starttls: tls.is_some() && !implicit_tls,
            max_line: MAX_LINE,
            max_literal: u32::try_from(config.limits.max_message_size).unwrap_or(u32::MAX),
            mailboxes: config.user_mailboxes.clone(),
        }),
        store,
        users: Arc::new(crate::auth::Users::new(config.users.clone())),
        tls,
        implicit_tls,
        limits,
        command_timeout: config.limits.command_timeout,
        idle_timeout: IDLE_TIMEOUT,
        failures,
        listener_name: if implicit_tls { "imaps" } else { "imap" },
        telemetry,
    }))
}

#[cfg(test)]
mod session_tests;
