//! The IMAP session: a state machine (not authenticated → authenticated → selected → logout)
//! fed the client's bytes, answering with actions. It makes no connection and reads no clock;
//! password checks are actions answered by the listener (`auth_result`), mailboxes are reached
//! through the `Folders` trait.

use std::num::NonZeroU32;
use std::sync::Arc;

use base64::Engine;
use imap_codec::decode::Decoder;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, Tag, Vec1};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::fetch::MessageDataItemName;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec};

use super::reply::{self, Kind};
use super::{SessionConfig, MAX_LINE};
use crate::auth::Credentials;
use crate::store::stream::MessageSource;
use crate::store::{Folders, StoreError};

/// What the listener does for the session.
#[derive(Debug)]
pub enum Action {
    Send(Vec<u8>),
    /// Upgrade the connection to TLS, then call `tls_established`.
    StartTls,
    /// Check these credentials, then call `auth_result`.
    Authenticate(Credentials),
    /// Close the connection.
    Close,
    /// Send a large message from the store piece by piece: `head`, then `len` bytes of its text
    /// from offset `skip`, then `)\r\n`. The session verified the whole blob already.
    Stream {
        head: Vec<u8>,
        source: MessageSource,
        skip: u64,
        len: u64,
    },
}

/// The selected folder and the session's view of its messages (sequence number n is
/// `uids[n - 1]`).
pub(super) struct Selected {
    pub mailbox: String,
    pub folder: String,
    pub read_only: bool,
    /// The folder's UIDVALIDITY when selected: another value means the folder was deleted and
    /// made anew since.
    pub uid_validity: u32,
    pub uids: Vec<u32>,
    /// The highest modification sequence the client has been told about.
    pub modseq: i64,
}

pub(super) enum State {
    NotAuthenticated,
    Authenticated {
        user: String,
        mailboxes: Vec<String>,
    },
    Selected {
        user: String,
        mailboxes: Vec<String>,
        sel: Selected,
    },
    Logout,
}

/// A command waiting for more input or for the listener.
enum Pending {
    None,
    /// AUTHENTICATE PLAIN sent without an initial response: the next line is the response.
    AuthData(Tag<'static>),
    /// Credentials handed to the listener.
    Auth(Tag<'static>),
    /// IDLE: waiting for DONE.
    Idle(Tag<'static>),
}

pub struct Session {
    pub(super) config: Arc<SessionConfig>,
    pub(super) store: Arc<dyn Folders>,
    frag: Fragmentizer,
    tls: bool,
    pub(super) state: State,
    pending: Pending,
}

impl Session {
    pub fn new(config: Arc<SessionConfig>, store: Arc<dyn Folders>, tls: bool) -> Session {
        let frag = Fragmentizer::new(config.max_literal.saturating_add(MAX_LINE as u32));
        Session {
            config,
            store,
            frag,
            tls,
            state: State::NotAuthenticated,
            pending: Pending::None,
        }
    }

    pub fn greeting(&self) -> Vec<Action> {
        vec![Action::Send(reply::greeting(&format!(
            "{} IMAP4rev2 ready",
            self.config.hostname
        )))]
    }

    /// Whether the session waits in IDLE (the listener then polls for news).
    pub fn idling(&self) -> bool {
        matches!(self.pending, Pending::Idle(_))
    }

    /// The mailbox of the selected folder, if one is selected.
    pub fn selected_mailbox(&self) -> Option<&str> {
        match &self.state {
            State::Selected { sel, .. } => Some(&sel.mailbox),
            _ => None,
        }
    }

    /// The user, once authenticated.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { user, .. } | State::Selected { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The connection is now TLS: buffered plaintext is discarded (no command injection across
    /// the upgrade).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.frag = Fragmentizer::new(self.config.max_literal.saturating_add(MAX_LINE as u32));
    }

    /// The autologout after the idle timeout.
    pub fn timeout(&mut self) -> Vec<Action> {
        self.state = State::Logout;
        vec![
            Action::Send(reply::bye("Autologout; idle for too long")),
            Action::Close,
        ]
    }

    /// Tells the client the server is going away.
    pub fn shutdown(&mut self) -> Vec<Action> {
        self.state = State::Logout;
        vec![
            Action::Send(reply::bye("Server shutting down")),
            Action::Close,
        ]
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Action> {
        self.frag.enqueue_bytes(bytes);
        let mut out = Vec::new();
        while let Some(info) = self.frag.progress() {
            if let FragmentInfo::Line {
                start,
                end,
                announcement,
                ..
            } = info
            {
                if end - start > self.config.max_line {
                    self.frag.poison_message();
                }
                if let Some(a) = announcement {
                    if a.length > self.config.max_literal {
                        let tag = owned_tag(self.frag.decode_tag());
                        self.frag.skip_message();
                        out.push(Action::Send(reply::status(
                            Kind::No,
                            tag.as_ref(),
                            Some(Code::TooBig),
                            "Literal too large",
                        )));
                        continue;
                    }
                    if a.mode == LiteralMode::Sync && !self.frag.is_message_poisoned() {
                        out.push(Action::Send(reply::continuation("Ready")));
                    }
                }
            }
            if !self.frag.is_message_complete() {
                continue;
            }
            let (too_long, poisoned) = (
                self.frag.is_max_message_size_exceeded(),
                self.frag.is_message_poisoned(),
            );
            let message = self.frag.message_bytes().to_vec();
            if too_long || poisoned {
                let tag = owned_tag(self.frag.decode_tag());
                out.push(Action::Send(reply::status(
                    Kind::Bad,
                    tag.as_ref(),
                    None,
                    "Command line too long",
                )));
                continue;
            }
            let actions = self.message(&message);
            let stop = actions.iter().any(|a| {
                matches!(
                    a,
                    Action::StartTls | Action::Close | Action::Authenticate(_)
                )
            });
            out.extend(actions);
            if stop {
                // Anything after STARTTLS is discarded; after LOGOUT nothing is read; during a
                // password check the rest waits in the fragmentizer.
                break;
            }
        }
        out
    }

    /// Continues after the listener checked credentials: `Ok(user)` or a failure.
    pub fn auth_result(&mut self, result: Result<String, ()>) -> Vec<Action> {
        let Pending::Auth(tag) = std::mem::replace(&mut self.pending, Pending::None) else {
            return Vec::new();
        };
        let user = match result {
            Ok(user) => user.to_ascii_lowercase(),
            Err(()) => {
                return vec![Action::Send(reply::status(
                    Kind::No,
                    Some(&tag),
                    Some(reply::code("AUTHENTICATIONFAILED")),
                    "Authentication failed",
                ))]
            }
        };
        let mailboxes = self
            .config
            .mailboxes
            .get(&user)
            .cloned()
            .unwrap_or_else(|| vec![user.clone()]);
        if let Some(own) = mailboxes.first() {
            if let Err(e) = self.store.ensure_default_folders(own) {
                tracing::warn!(%user, error = %e, "cannot prepare the default folders");
            }
        }
        self.state = State::Authenticated { user, mailboxes };
        let caps = reply::capabilities(self.tls, self.config.starttls, true);
        let mut out = vec![Action::Send(reply::status(
            Kind::Ok,
            Some(&tag),
            Some(Code::Capability(caps)),
            "Logged in",
        ))];
        // Commands pipelined behind the login.
        out.extend(self.feed(&[]));
        out
    }

    fn message(&mut self, bytes: &[u8]) -> Vec<Action> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::AuthData(tag) => self.auth_data(tag, bytes),
            Pending::Idle(tag) => match IdleDoneCodec::default().decode(bytes) {
                Ok(_) => vec![Action::Send(reply::status(
                    Kind::Ok,
                    Some(&tag),
                    None,
                    "IDLE terminated",
                ))],
                Err(_) => {
                    self.pending = Pending::Idle(tag);
                    vec![Action::Send(reply::status(
                        Kind::Bad,
                        None,
                        None,
                        "Expected DONE",
                    ))]
                }
            },
            Pending::Auth(tag) => {
                self.pending = Pending::Auth(tag);
                Vec::new()
            }
            Pending::None => match CommandCodec::default().decode(bytes) {
                Ok((_, command)) => self.command(command),
                Err(_) => {
                    let tag =
                        Tag::try_from(bytes.split(|b| *b == b' ').next().unwrap_or_default()).ok();
                    vec![Action::Send(reply::status(
                        Kind::Bad,
                        tag.as_ref(),
                        None,
                        "Could not parse the command",
                    ))]
                }
            },
        }
    }

    fn auth_data(&mut self, tag: Tag<'static>, bytes: &[u8]) -> Vec<Action> {
        match AuthenticateDataCodec::default().decode(bytes) {
            Ok((_, AuthenticateData::Continue(data))) => self.plain(tag, data.declassify()),
            Ok((_, AuthenticateData::Cancel)) => vec![Action::Send(reply::status(
                Kind::Bad,
                Some(&tag),
                None,
                "Authentication cancelled",
            ))],
            Err(_) => vec![Action::Send(reply::status(
                Kind::Bad,
                Some(&tag),
                None,
                "Expected a base64 response",
            ))],
        }
    }

    /// SASL PLAIN (RFC 4616): authzid NUL authcid NUL password; authzid must be empty or equal.
    fn plain(&mut self, tag: Tag<'static>, data: &[u8]) -> Vec<Action> {
        let parts: Vec<&[u8]> = data.split(|b| *b == 0).collect();
        let [authz, user, password] = parts[..] else {
            return vec![Action::Send(reply::status(
                Kind::Bad,
                Some(&tag),
                None,
                "Malformed PLAIN response",
            ))];
        };
        if !authz.is_empty() && authz != user {
            return vec![Action::Send(reply::status(
                Kind::No,
                Some(&tag),
                Some(reply::code("AUTHORIZATIONFAILED")),
                "Acting as another user is not supported",
            ))];
        }
        self.login(
            tag,
            String::from_utf8_lossy(user).into_owned(),
            String::from_utf8_lossy(password).into_owned(),
        )
    }

    fn login(&mut self, tag: Tag<'static>, username: String, password: String) -> Vec<Action> {
        self.pending = Pending::Auth(tag);
        vec![Action::Authenticate(Credentials { username, password })]
    }

    fn command(&mut self, command: Command<'_>) -> Vec<Action> {
        let tag = Tag::try_from(command.tag.as_ref().to_string())
            .unwrap_or_else(|_| Tag::unvalidated("*"));
        let send = |kind, code, text: &str| {
            vec![Action::Send(reply::status(kind, Some(&tag), code, text))]
        };
        match command.body {
            CommandBody::Capability => {
                let authenticated = !matches!(self.state, State::NotAuthenticated);
                let caps = reply::capabilities(self.tls, self.config.starttls, authenticated);
                let mut out = vec![Action::Send(reply::data(Data::Capability(caps)))];
                out.extend(send(Kind::Ok, None, "CAPABILITY completed"));
                out
            }
            CommandBody::Noop | CommandBody::Check => {
                let mut out = self.poll();
                out.extend(send(Kind::Ok, None, "NOOP completed"));
                out
            }
            CommandBody::Logout => {
                self.state = State::Logout;
                let mut out = vec![Action::Send(reply::bye("Logging out"))];
                out.extend(send(Kind::Ok, None, "LOGOUT completed"));
                out.push(Action::Close);
                out
            }
            CommandBody::StartTLS => {
                if self.tls || !self.config.starttls {
                    return send(Kind::Bad, None, "STARTTLS not available");
                }
                if !matches!(self.state, State::NotAuthenticated) {
                    return send(Kind::Bad, None, "Already authenticated");
                }
                let mut out = send(Kind::Ok, None, "Begin TLS negotiation now");
                out.push(Action::StartTls);
                out
            }
            CommandBody::Login { username, password } => {
                if !matches!(self.state, State::NotAuthenticated) {
                    return send(Kind::Bad, None, "Already authenticated");
                }
                if !self.tls {
                    return send(
                        Kind::No,
                        Some(reply::code("PRIVACYREQUIRED")),
                        "LOGIN is disabled until STARTTLS",
                    );
                }
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(tag, user, password)
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if !matches!(self.state, State::NotAuthenticated) {
                    return send(Kind::Bad, None, "Already authenticated");
                }
                if !self.tls {
                    return send(
                        Kind::No,
                        Some(reply::code("PRIVACYREQUIRED")),
                        "AUTHENTICATE is disabled until STARTTLS",
                    );
                }
                if mechanism != AuthMechanism::Plain {
                    return send(Kind::No, None, "Only PLAIN is supported");
                }
                match initial_response {
                    Some(data) => self.plain(tag, data.declassify()),
                    None => {
                        self.pending = Pending::AuthData(tag);
                        vec![Action::Send(reply::continuation(""))]
                    }
                }
            }
            body => self.authenticated_command(tag, body),
        }
    }

    /// Commands of the authenticated and selected states.
    fn authenticated_command(&mut self, tag: Tag<'static>, body: CommandBody<'_>) -> Vec<Action> {
        if matches!(self.state, State::NotAuthenticated | State::Logout) {
            return vec![Action::Send(reply::status(
                Kind::Bad,
                Some(&tag),
                None,
                "Authenticate first",
            ))];
        }
        let result = match body {
            CommandBody::Enable { capabilities } => Ok(self.enable(capabilities)),
            CommandBody::Idle => {
                let mut out = self.poll();
                out.push(Action::Send(reply::continuation("idling")));
                self.pending = Pending::Idle(tag.clone());
                return out;
            }
            other => self.folder_command(&tag, other),
        };
        match result {
            Ok(mut out) => {
                if !out.iter().any(|a| matches!(a, Action::Send(b) if b.starts_with(format!("{} ", tag.as_ref()).as_bytes()))) {
                    out.push(Action::Send(reply::status(Kind::Ok, Some(&tag), None, "Completed")));
                }
                out
            }
            Err(e) => vec![Action::Send(failure(&tag, &e))],
        }
    }

    /// ENABLE: IMAP4rev2 is enabled (the answers are the same either way); nothing else.
    fn enable(&mut self, capabilities: Vec1<CapabilityEnable<'_>>) -> Vec<Action> {
        let enabled: Vec<CapabilityEnable<'_>> = capabilities
            .into_inner()
            .into_iter()
            .filter(|c| c.to_string().eq_ignore_ascii_case("IMAP4rev2"))
            .collect();
        vec![Action::Send(reply::data(Data::Enabled {
            capabilities: enabled,
        }))]
    }

    /// News of the selected folder since the client last looked: EXPUNGE (highest first),
    /// FETCH FLAGS of messages changed elsewhere, and EXISTS. Called on NOOP, IDLE and by the
    /// listener's poll during IDLE. If another session deleted or renamed the selected folder,
    /// the session says BYE and ends (RFC 2180 §3.1): its sequence numbers name nothing any more.
    pub fn poll(&mut self) -> Vec<Action> {
        let State::Selected { sel, .. } = &mut self.state else {
            return Vec::new();
        };
        let view = match self.store.select(&sel.mailbox, &sel.folder) {
            Ok(v) if v.uid_validity == sel.uid_validity => v,
            Ok(_)
            | Err(StoreError::Index {
                kind: crate::store::IndexErrorKind::NotFound,
                ..
            }) => {
                self.state = State::Logout;
                return vec![
                    Action::Send(reply::bye(
                        "Selected folder was deleted or renamed, have to disconnect",
                    )),
                    Action::Close,
                ];
            }
            Err(_) => return Vec::new(),
        };
        let now: Vec<u32> = view.messages.iter().map(|m| m.uid).collect();
        let mut out = Vec::new();
        for i in (0..sel.uids.len()).rev() {
            if now.binary_search(&sel.uids[i]).is_err() {
                sel.uids.remove(i);
                if let Some(n) = NonZeroU32::new(i as u32 + 1) {
                    out.push(Action::Send(reply::data(Data::Expunge(n))));
                }
            }
        }
        let known = sel.uids.last().copied().unwrap_or(0);
        for m in view
            .messages
            .iter()
            .filter(|m| m.modseq > sel.modseq && m.uid <= known)
        {
            let seq = sel
                .uids
                .binary_search(&m.uid)
                .ok()
                .and_then(|i| NonZeroU32::new(i as u32 + 1));
            let flags = super::fetch::items(&[MessageDataItemName::Flags], m, None, false);
            if let (Some(seq), Ok(items)) = (seq, Vec1::try_from(flags)) {
                out.push(Action::Send(reply::data(Data::Fetch { seq, items })));
            }
        }
        sel.modseq = view
            .messages
            .iter()
            .map(|m| m.modseq)
            .max()
            .unwrap_or(0)
            .max(sel.modseq);
        let new: Vec<u32> = now.iter().copied().filter(|u| *u > known).collect();
        if !new.is_empty() {
            sel.uids.extend(new);
            out.push(Action::Send(reply::data(Data::Exists(
                sel.uids.len() as u32
            ))));
        }
        out
    }
}

fn owned_tag(tag: Option<Tag<'_>>) -> Option<Tag<'static>> {
    tag.and_then(|t| Tag::try_from(t.as_ref().to_string()).ok())
}

/// The tagged NO for a store failure: a revoked mailbox says so plainly.
pub(super) fn failure(tag: &Tag<'_>, e: &StoreError) -> Vec<u8> {
    let (code, text) = match e {
        StoreError::Revoked { .. } => (
            None,
            "Mailbox unavailable: its keys were revoked".to_string(),
        ),
        StoreError::NoSuchMailbox(_) => (
            Some(Code::Other(
                imap_codec::imap_types::response::CodeOther::unvalidated(b"NONEXISTENT".as_slice()),
            )),
            "No such mailbox".into(),
        ),
        StoreError::Index {
            kind: crate::store::IndexErrorKind::NotFound,
            message,
        } => (Some(reply::code("NONEXISTENT")), message.clone()),
        StoreError::Index {
            kind: crate::store::IndexErrorKind::Conflict,
            message,
        } => (Some(reply::code("ALREADYEXISTS")), message.clone()),
        StoreError::Policy(p) => (Some(reply::code("CANNOT")), p.clone()),
        _ => (Some(reply::code("SERVERBUG")), "Internal error".to_string()),
    };
    if !matches!(e, StoreError::Index { .. } | StoreError::Policy(_)) {
        tracing::warn!(error = %e, "IMAP command failed in the store");
    }
    reply::status(Kind::No, Some(tag), code, &text)
}

/// Base64 of SASL data, for tests.
pub fn plain_response(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}
