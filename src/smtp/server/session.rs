//! The inbound SMTP session as a pure state machine: bytes in, replies and actions out, no I/O.
//!
//! The caller (the listener) owns the socket, the clock and TLS. It feeds whatever it reads to
//! [`Session::feed`] and carries out the returned [`Action`]s in order. The session never blocks
//! and never panics on input; everything it cannot accept gets a 4xx/5xx reply.

use std::net::SocketAddr;
use std::sync::Arc;

use super::policy::Policy;
use super::transaction::{InboundVerdict, Transaction};
use crate::mail::dsn::{MailDsn, RcptDsn};
use crate::queue::InFlight;
use crate::smtp::proto::{BareNewline, Command, LineEvent, LineReader, MailFrom, RcptTo, Reply};
use crate::tls::TlsFacts;

mod auth;
mod data;

use auth::AuthStep;
pub use auth::Credentials;
pub use data::RESERVE_AT_START;
use data::{no_room, Content};

/// After this many 5xx replies the session says 421 and closes (Postfix smtpd_hard_error_limit).
pub const MAX_ERRORS: usize = 20;

/// How a listener's sessions behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our name: in the greeting and the first line of the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes (advertised as SIZE).
    pub max_message_size: usize,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// A certificate is configured, so STARTTLS is offered.
    pub starttls_available: bool,
    /// Bare CR or LF in message content: refuse the message (default) or store it as CRLF.
    /// Command lines always refuse them.
    pub bare_newline: BareNewline,
    /// AUTH PLAIN/LOGIN is offered (over TLS only) and MAIL requires it: a submission listener.
    pub auth: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            hostname: "localhost".to_string(),
            max_message_size: 35_882_577,
            max_recipients: 1000,
            starttls_available: false,
            bare_newline: BareNewline::Reject,
            auth: false,
        }
    }
}

/// What policy checks may look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFacts {
    pub peer: SocketAddr,
    /// The client address is in relay_networks (computed by the listener).
    pub relay_allowed: bool,
    /// Set once STARTTLS completed.
    pub tls: Option<TlsFacts>,
    /// The name given in the last HELO/EHLO (cleared by STARTTLS).
    pub helo: Option<String>,
    /// The user who authenticated with AUTH.
    pub authenticated: Option<String>,
}

/// What the caller must do next, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bytes to write: one or more formatted replies.
    Send(Vec<u8>),
    /// Write everything sent so far, run the TLS handshake, then call `tls_established`.
    StartTls,
    /// Message content of the transaction in progress, in order: store it as it comes.
    Data(Vec<u8>),
    /// The content passed on with `Data` so far is refused or abandoned: drop it.
    Discard,
    /// The content is complete (everything was passed on with `Data`): write the message
    /// durably, then call `delivery_result`.
    Deliver(Box<Transaction>),
    /// Check these credentials (off the reactor), then call `auth_result`.
    Authenticate(Credentials),
    /// Write everything sent so far and close the connection.
    Close,
}

/// Where the session is in the dialogue.
#[derive(Debug)]
enum State {
    /// Reading command lines.
    Command,
    /// Reading message content after 354 (into the envelope's content).
    Data,
    /// Reading a BDAT chunk into the envelope's content; `last` ends the message.
    Chunk { remaining: u64, last: bool },
    /// Reading a refused BDAT chunk, to throw it away; then `reply`.
    Skip { remaining: u64, reply: Reply },
    /// `Deliver` was emitted; input is buffered until `delivery_result`.
    AwaitDelivery,
    /// `StartTls` was emitted; input is discarded until `tls_established`.
    AwaitTls,
    /// AUTH sent 334: the next line is a base64 response, not a command.
    AuthLine(AuthStep),
    /// `Authenticate` was emitted; input is buffered until `auth_result`.
    AwaitAuth,
    /// `Close` was emitted; nothing more happens.
    Closed,
}

/// The transaction being built between MAIL and the end of DATA.
#[derive(Debug)]
struct Envelope {
    mail_from: String,
    rcpt_to: Vec<String>,
    eight_bit: bool,
    smtputf8: bool,
    dsn: MailDsn,
    /// One entry per `rcpt_to`, in the same order.
    rcpt_dsn: Vec<RcptDsn>,
    /// SIZE= given with MAIL.
    declared_size: Option<u64>,
    /// REQUIRETLS given with MAIL (RFC 8689).
    requiretls: bool,
    /// The inbound connector the policy matched at MAIL FROM.
    inbound: Option<InboundVerdict>,
    /// Once DATA started.
    content: Option<Content>,
}

/// One inbound SMTP connection.
pub struct Session {
    config: Arc<SessionConfig>,
    policy: Arc<dyn Policy>,
    facts: SessionFacts,
    /// The last greeting was EHLO (ESMTP).
    esmtp: bool,
    envelope: Option<Envelope>,
    state: State,
    /// Input not yet processed.
    input: Vec<u8>,
    lines: LineReader,
    errors: usize,
    /// Message bytes in flight, shared by every session of the server.
    in_flight: Arc<InFlight>,
}

/// Collects actions, merging consecutive replies into one `Send`.
#[derive(Default)]
struct Out(Vec<Action>);

impl Out {
    fn reply(&mut self, reply: &Reply) {
        let bytes = reply.to_bytes();
        match self.0.last_mut() {
            Some(Action::Send(buf)) => buf.extend_from_slice(&bytes),
            _ => self.0.push(Action::Send(bytes)),
        }
    }
}

fn ok(enhanced: [u16; 3]) -> Reply {
    Reply::new(250, enhanced, "Ok")
}

fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, [5, 5, 1], format!("Error: {text}"))
}

fn unicode_not_declared() -> Reply {
    Reply::new(
        553,
        [5, 6, 7],
        "Must declare SMTPUTF8 to send Unicode address",
    )
}

impl Session {
    pub fn new(
        config: Arc<SessionConfig>,
        policy: Arc<dyn Policy>,
        peer: SocketAddr,
        relay_allowed: bool,
    ) -> Session {
        Session {
            config,
            policy,
            facts: SessionFacts {
                peer,
                relay_allowed,
                tls: None,
                helo: None,
                authenticated: None,
            },
            esmtp: false,
            envelope: None,
            state: State::Command,
            input: Vec::new(),
            lines: LineReader::new(),
            errors: 0,
            in_flight: InFlight::unlimited(),
        }
    }

    /// Reserve message content from `budget` (shared by the server's sessions) rather than from
    /// a budget of this session's own that nothing limits.
    pub fn with_in_flight(mut self, budget: Arc<InFlight>) -> Session {
        self.in_flight = budget;
        self
    }

    /// The 220 greeting, to send when the connection opens.
    pub fn greeting(&mut self) -> Vec<Action> {
        let text = format!("{} ESMTP sealpost", self.config.hostname);
        vec![Action::Send(Reply::bare(220, text).to_bytes())]
    }

    /// Takes bytes read from the client and processes every complete command (and DATA) in them.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        match self.state {
            // CVE-2011-0411: nothing sent before the handshake may be read as a command after it.
            State::Closed | State::AwaitTls => return Vec::new(),
            State::AwaitDelivery | State::AwaitAuth => {
                self.input.extend_from_slice(input);
                return Vec::new();
            }
            State::Command
            | State::Data
            | State::Chunk { .. }
            | State::Skip { .. }
            | State::AuthLine(_) => self.input.extend_from_slice(input),
        }
        let mut out = Out::default();
        self.process(&mut out);
        out.0
    }

    /// The TLS handshake succeeded: the session starts over, as after the greeting.
    /// Ignored unless the session asked for it with `StartTls`.
    pub fn tls_established(&mut self, facts: TlsFacts) -> Vec<Action> {
        if !matches!(self.state, State::AwaitTls) {
            return Vec::new();
        }
        self.facts.tls = Some(facts);
        self.facts.helo = None;
        self.esmtp = false;
        self.envelope = None;
        self.input.clear();
        self.lines = LineReader::new();
        self.state = State::Command;
        Vec::new()
    }

    /// For listeners with implicit TLS (port 465): the session runs over TLS from its start.
    /// Call before `greeting`.
    pub fn implicit_tls(&mut self, facts: TlsFacts) {
        self.facts.tls = Some(facts);
    }

    /// The outcome of a `Deliver`: the queue id, or the reply to give instead. Then carries on
    /// with input buffered meanwhile. Ignored unless a delivery is pending.
    pub fn delivery_result(&mut self, result: Result<String, Reply>) -> Vec<Action> {
        if !matches!(self.state, State::AwaitDelivery) {
            return Vec::new();
        }
        let mut out = Out::default();
        match result {
            Ok(id) => out.reply(&Reply::new(250, [2, 0, 0], format!("Ok: queued as {id}"))),
            Err(reply) => out.reply(&reply),
        }
        self.envelope = None;
        self.state = State::Command;
        self.process(&mut out);
        out.0
    }

    /// The client was idle too long: say so and close.
    pub fn timeout(&mut self) -> Vec<Action> {
        if matches!(self.state, State::Closed) {
            return Vec::new();
        }
        let mut out = Out::default();
        let text = format!("{} Error: timeout exceeded", self.config.hostname);
        self.close(Reply::new(421, [4, 4, 2], text), &mut out);
        out.0
    }

    /// True while message content is being read (after 354, before the final dot; inside a
    /// BDAT chunk): the wait for more input is bounded by the data timeout rather than the
    /// command timeout.
    pub fn in_data(&self) -> bool {
        matches!(
            self.state,
            State::Data | State::Chunk { .. } | State::Skip { .. }
        )
    }

    /// True from an accepted MAIL until the transaction's reply (and while a BDAT chunk is
    /// read): a shutdown lets such a session finish; any other session can be told 421 at once.
    pub fn in_transaction(&self) -> bool {
        self.envelope.is_some()
            || matches!(
                self.state,
                State::Data | State::Chunk { .. } | State::Skip { .. } | State::AwaitDelivery
            )
    }

    pub fn is_tls(&self) -> bool {
        self.facts.tls.is_some()
    }

    pub fn facts(&self) -> &SessionFacts {
        &self.facts
    }

    /// Works through buffered input until it runs out or the session must wait for the caller.
    fn process(&mut self, out: &mut Out) {
        let mut input = std::mem::take(&mut self.input);
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match &mut self.state {
                State::Command => {
                    let (event, used) = self.lines.next(rest);
                    pos += used;
                    match event {
                        Some(LineEvent::Line(line)) => self.command(line, out),
                        Some(LineEvent::TooLong) => {
                            self.reject(Reply::new(500, [5, 5, 2], "Error: line too long"), out)
                        }
                        Some(LineEvent::BareLf) => self
                            .reject(Reply::new(500, [5, 5, 2], "Error: bare <LF> received"), out),
                        Some(LineEvent::BareCr) => self
                            .reject(Reply::new(500, [5, 5, 2], "Error: bare <CR> received"), out),
                        None if used == 0 => break,
                        None => {}
                    }
                }
                State::Data => pos += self.data_bytes(rest, out),
                State::Chunk { .. } | State::Skip { .. } => pos += self.chunk_bytes(rest, out),
                State::AuthLine(step) => {
                    let step = step.clone();
                    let (event, used) = self.lines.next(rest);
                    pos += used;
                    match event {
                        Some(LineEvent::Line(line)) => self.auth_line(step, line, out),
                        Some(_) => {
                            self.state = State::Command;
                            self.reject(
                                Reply::new(
                                    501,
                                    [5, 5, 2],
                                    "Error: malformed authentication response",
                                ),
                                out,
                            )
                        }
                        None if used == 0 => break,
                        None => {}
                    }
                }
                State::AwaitDelivery | State::AwaitAuth => break,
                State::AwaitTls | State::Closed => pos = input.len(),
            }
        }
        input.drain(..pos);
        self.input = input;
    }

    fn command(&mut self, line: &[u8], out: &mut Out) {
        let command = match crate::smtp::proto::command::parse(line) {
            Ok(command) => command,
            Err(reply) => return self.reject(reply, out),
        };
        match command {
            Command::Ehlo(name) => self.hello(name, true, out),
            Command::Helo(name) => self.hello(name, false, out),
            Command::Mail(mail) => self.mail(mail, out),
            Command::Rcpt(rcpt) => self.rcpt(rcpt, out),
            Command::Data => self.data(out),
            Command::Bdat { size, last } => self.bdat(size, last, out),
            Command::Rset => {
                self.drop_transaction(out);
                out.reply(&ok([2, 0, 0]));
            }
            Command::Noop => out.reply(&ok([2, 0, 0])),
            Command::Quit => self.close(Reply::new(221, [2, 0, 0], "Bye"), out),
            Command::Vrfy => out.reply(&Reply::new(
                252,
                [2, 5, 2],
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => out.reply(&self.help()),
            Command::StartTls => self.starttls(out),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, out),
            Command::NotImplemented => self.reject(
                Reply::new(502, [5, 5, 1], "Error: command not implemented"),
                out,
            ),
            Command::Forbidden => self.close(
                Reply::new(221, [2, 7, 0], "Error: I can break rules, too. Goodbye."),
                out,
            ),
        }
    }

    /// HELO/EHLO: (re)start the session; any transaction is dropped (RFC 5321 §4.1.4).
    fn hello(&mut self, name: String, esmtp: bool, out: &mut Out) {
        self.facts.helo = Some(name);
        self.esmtp = esmtp;
        self.drop_transaction(out);
        let config = &self.config;
        if !esmtp {
            return out.reply(&Reply::bare(250, config.hostname.as_str()));
        }
        let mut lines = vec![
            config.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", config.max_message_size),
        ];
        if config.starttls_available && !self.is_tls() {
            lines.push("STARTTLS".to_string());
        }
        if config.auth && self.is_tls() && self.facts.authenticated.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.extend(
            [
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
            ]
            .map(String::from),
        );
        // RFC 8689: only a session that is itself protected can carry the demand on.
        if self.is_tls() {
            lines.push("REQUIRETLS".to_string());
        }
        out.reply(&Reply::bare(250, lines.join("\n")));
    }

    /// HELP: the commands this listener offers (STARTTLS and AUTH only where they are).
    fn help(&self) -> Reply {
        let mut commands = "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP".to_string();
        if self.config.starttls_available {
            commands.push_str(" STARTTLS");
        }
        if self.config.auth {
            commands.push_str(" AUTH");
        }
        Reply::new(214, [2, 0, 0], format!("Commands: {commands}"))
    }

    fn mail(&mut self, mail: MailFrom, out: &mut Out) {
        if self.facts.helo.is_none() {
            return self.reject(bad_sequence("send HELO/EHLO first"), out);
        }
        if self.envelope.is_some() {
            return self.reject(bad_sequence("nested MAIL command"), out);
        }
        if self.config.auth && self.facts.authenticated.is_none() {
            return self.reject(Reply::new(530, [5, 7, 0], "Authentication required"), out);
        }
        let max = u64::try_from(self.config.max_message_size).unwrap_or(u64::MAX);
        if mail.size.is_some_and(|size| size > max) {
            let reply = Reply::new(552, [5, 3, 4], "Message size exceeds fixed limit");
            return self.reject(reply, out);
        }
        if mail.size.is_some_and(|size| !self.in_flight.fits(size)) {
            return self.reject(no_room(452), out);
        }
        if !mail.smtputf8 && !mail.address.is_ascii() {
            return self.reject(unicode_not_declared(), out);
        }
        if mail.requiretls && !self.is_tls() {
            let reply = Reply::new(
                530,
                [5, 7, 10],
                "REQUIRETLS needs a TLS session: STARTTLS first",
            );
            return self.reject(reply, out);
        }
        let inbound = match self.policy.check_sender(&self.facts, &mail.address) {
            Ok(verdict) => verdict,
            Err(reply) => return self.reject(reply, out),
        };
        self.envelope = Some(Envelope {
            mail_from: mail.address,
            rcpt_to: Vec::new(),
            eight_bit: mail.eight_bit,
            smtputf8: mail.smtputf8,
            dsn: mail.dsn,
            rcpt_dsn: Vec::new(),
            declared_size: mail.size,
            requiretls: mail.requiretls,
            inbound,
            content: None,
        });
        out.reply(&ok([2, 1, 0]));
    }

    fn rcpt(&mut self, RcptTo { address: rcpt, dsn }: RcptTo, out: &mut Out) {
        let Some(envelope) = &self.envelope else {
            return self.reject(bad_sequence("need MAIL command"), out);
        };
        let verdict = if envelope.rcpt_to.len() >= self.config.max_recipients {
            Err(Reply::new(452, [4, 5, 3], "Error: too many recipients"))
        } else if !envelope.smtputf8 && !rcpt.is_ascii() {
            Err(unicode_not_declared())
        } else {
            self.policy
                .check_recipient(&self.facts, &envelope.mail_from, &rcpt)
        };
        match (verdict, &mut self.envelope) {
            (Ok(()), Some(envelope)) => {
                envelope.rcpt_to.push(rcpt);
                envelope.rcpt_dsn.push(dsn);
                out.reply(&ok([2, 1, 5]));
            }
            (Ok(()), None) => {}
            (Err(reply), _) => self.reject(reply, out),
        }
    }

    fn starttls(&mut self, out: &mut Out) {
        if self.is_tls() {
            return self.reject(bad_sequence("TLS already active"), out);
        }
        if !self.config.starttls_available {
            return self.reject(Reply::new(454, [4, 7, 0], "TLS not available"), out);
        }
        if self.envelope.is_some() {
            return self.reject(bad_sequence("MAIL transaction in progress"), out);
        }
        out.reply(&Reply::new(220, [2, 0, 0], "Ready to start TLS"));
        out.0.push(Action::StartTls);
        // Everything the client sent after STARTTLS is dropped (see `feed`).
        self.state = State::AwaitTls;
    }

    /// Sends an error reply; too many permanent errors end the session.
    fn reject(&mut self, reply: Reply, out: &mut Out) {
        out.reply(&reply);
        if reply.is_permanent() {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                let text = format!("{} Error: too many errors", self.config.hostname);
                self.close(Reply::new(421, [4, 7, 0], text), out);
            }
        }
    }

    fn close(&mut self, reply: Reply, out: &mut Out) {
        out.reply(&reply);
        out.0.push(Action::Close);
        self.state = State::Closed;
        self.envelope = None;
        self.input.clear();
    }
}

#[cfg(test)]
mod tests;
