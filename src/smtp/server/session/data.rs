//! Message content inside the session: DATA and BDAT chunks (RFC 3030), passed on in pieces as
//! they arrive (`Action::Data`), the size limit, and the in-flight budget every transaction
//! reserves from.
//!
//! A BDAT chunk is always read to its end before it is answered, also when it is refused (no
//! transaction, a limit, the budget): its bytes are never taken for commands. Any refusal of a
//! chunk ends the transaction, so that chunks pipelined after it cannot make a message with a
//! hole in it; they get `503 5.5.1` in turn.

use super::{bad_sequence, Action, Out, Session, State};
use crate::queue::Reservation;
use crate::smtp::proto::{DataError, DataReceiver, Reply};
use crate::smtp::server::transaction::{Protocol, Transaction};

/// What a transaction without a declared SIZE reserves when its content starts.
pub const RESERVE_AT_START: u64 = 64 * 1024;

/// The content of the transaction in progress.
#[derive(Debug)]
pub(super) struct Content {
    /// BDAT chunks rather than DATA.
    chunked: bool,
    /// Octets of BDAT chunks read so far.
    chunk_octets: u64,
    receiver: DataReceiver,
    reservation: Reservation,
    /// `Action::Discard` was emitted: the content is refused and no longer passed on.
    dropped: bool,
    /// The transfer went past the in-flight cap.
    over_cap: bool,
}

/// The reply when the in-flight budget has no room (RFC 3463 4.3.1, mail system full).
pub(super) fn no_room(code: u16) -> Reply {
    Reply::new(code, [4, 3, 1], "Insufficient system storage")
}

/// The reply after the end of data for content that cannot be accepted. A line over 1000 octets
/// gets RFC 5321 §4.5.3.1.10's "500 Line too long", worded like the command-line case.
fn data_error(error: DataError) -> Reply {
    match error {
        DataError::TooLarge => Reply::new(552, [5, 3, 4], "Message size exceeds fixed limit"),
        DataError::BareLf => Reply::new(550, [5, 5, 2], "Error: bare <LF> received"),
        DataError::BareCr => Reply::new(550, [5, 5, 2], "Error: bare <CR> received"),
        DataError::LineTooLong => Reply::new(500, [5, 5, 2], "Error: line too long"),
    }
}

impl Content {
    /// Passes on what `piece` holds of accepted content, or drops the content once it cannot be
    /// accepted or no longer fits in the in-flight budget.
    fn pass_on(&mut self, piece: Vec<u8>, out: &mut Out) {
        if self.dropped {
            return;
        }
        let size = self.receiver.size() as u64;
        if !self.receiver.is_failed() && !self.reservation.try_grow_to(size) {
            self.over_cap = true;
        }
        if self.receiver.is_failed() || self.over_cap {
            self.dropped = true;
            out.0.push(Action::Discard);
        } else if !piece.is_empty() {
            out.0.push(Action::Data(piece));
        }
    }

    /// Drops the content if it was not dropped already.
    pub(super) fn discard(&mut self, out: &mut Out) {
        if !self.dropped {
            self.dropped = true;
            out.0.push(Action::Discard);
        }
    }

    /// The reply that refuses the content, if any: a problem with it, else the in-flight cap.
    fn refusal(&self) -> Option<Reply> {
        match self.receiver.outcome() {
            Err(error) => Some(data_error(error)),
            Ok(_) if self.over_cap => Some(no_room(451)),
            Ok(_) => None,
        }
    }
}

impl Session {
    /// DATA: 354, then content until the end-of-data line.
    pub(super) fn data(&mut self, out: &mut Out) {
        let Some(envelope) = self.envelope.as_mut().filter(|e| !e.rcpt_to.is_empty()) else {
            return self.reject(bad_sequence("need RCPT command"), out);
        };
        if envelope.content.is_some() {
            return self.reject(bad_sequence("DATA after BDAT"), out);
        }
        let receiver =
            DataReceiver::with_bare_newline(self.config.max_message_size, self.config.bare_newline);
        if let Err(reply) = self.start_content(receiver, false) {
            return self.reject(reply, out);
        }
        out.reply(&Reply::bare(354, "End data with <CR><LF>.<CR><LF>"));
        self.state = State::Data;
    }

    /// Reserves the transaction's start in the in-flight budget and sets up its content.
    fn start_content(&mut self, receiver: DataReceiver, chunked: bool) -> Result<(), Reply> {
        let Some(envelope) = self.envelope.as_mut() else {
            return Err(bad_sequence("need MAIL command"));
        };
        let wanted = envelope.declared_size.unwrap_or(0).max(RESERVE_AT_START);
        let reservation = self
            .in_flight
            .try_reserve(wanted)
            .ok_or_else(|| no_room(452))?;
        envelope.content = Some(Content {
            chunked,
            chunk_octets: 0,
            receiver,
            reservation,
            dropped: false,
            over_cap: false,
        });
        Ok(())
    }

    /// BDAT: the chunk of `size` octets that follows is content (or, when refused, read and
    /// thrown away); `last` ends the message.
    pub(super) fn bdat(&mut self, size: u64, last: bool, out: &mut Out) {
        // Ok(true): the first chunk, the content starts.
        let status = match &self.envelope {
            None => Err(bad_sequence("need MAIL command")),
            Some(e) if e.rcpt_to.is_empty() => Err(bad_sequence("need RCPT command")),
            Some(e) => match &e.content {
                None => Ok(true),
                Some(content) if !content.chunked => Err(bad_sequence("BDAT after DATA")),
                Some(_) => Ok(false),
            },
        };
        let refusal = match status {
            Ok(true) => {
                let max = self.config.max_message_size;
                let receiver = DataReceiver::chunked(max, self.config.bare_newline);
                self.start_content(receiver, true).err()
            }
            Ok(false) => None,
            Err(reply) => Some(reply),
        };
        match refusal {
            Some(reply) => {
                self.drop_transaction(out);
                self.state = State::Skip {
                    remaining: size,
                    reply,
                };
            }
            None => {
                self.state = State::Chunk {
                    remaining: size,
                    last,
                }
            }
        }
        // An empty chunk is complete at once.
        self.chunk_bytes(&[], out);
    }

    /// Takes BDAT chunk bytes from `input` (content, or thrown away after a refusal); returns
    /// the bytes used.
    pub(super) fn chunk_bytes(&mut self, input: &[u8], out: &mut Out) -> usize {
        let (remaining, last) = match &mut self.state {
            State::Chunk { remaining, last } => (remaining, Some(*last)),
            State::Skip { remaining, .. } => (remaining, None),
            _ => return 0,
        };
        let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
        *remaining -= take as u64;
        let done = *remaining == 0;
        if let (Some(_), Some(content)) = (
            last,
            self.envelope.as_mut().and_then(|e| e.content.as_mut()),
        ) {
            let mut piece = Vec::new();
            content.chunk_octets += take as u64;
            content.receiver.chunk_into(&input[..take], &mut piece);
            content.pass_on(piece, out);
        }
        if done {
            match std::mem::replace(&mut self.state, State::Command) {
                State::Skip { reply, .. } => self.reject(reply, out),
                State::Chunk { last, .. } => self.end_of_chunk(last, out),
                _ => {}
            }
        }
        take
    }

    /// A BDAT chunk was read completely.
    fn end_of_chunk(&mut self, last: bool, out: &mut Out) {
        let Some(content) = self.envelope.as_mut().and_then(|e| e.content.as_mut()) else {
            return;
        };
        if let Some(reply) = content.refusal() {
            self.drop_transaction(out);
            return self.reject(reply, out);
        }
        if last {
            let mut piece = Vec::new();
            content.receiver.end_chunks(&mut piece);
            content.pass_on(piece, out);
            return self.end_of_data(out);
        }
        let octets = content.chunk_octets;
        out.reply(&Reply::new(250, [2, 0, 0], format!("Ok: {octets} bytes")));
    }

    /// Takes message content from `input` (after 354); returns the bytes used.
    pub(super) fn data_bytes(&mut self, input: &[u8], out: &mut Out) -> usize {
        let Some(content) = self.envelope.as_mut().and_then(|e| e.content.as_mut()) else {
            self.state = State::Command;
            return 0;
        };
        let mut piece = Vec::new();
        let done = content.receiver.ingest_into(input, &mut piece);
        content.pass_on(piece, out);
        match done {
            Some(used) => {
                self.end_of_data(out);
                used
            }
            None => input.len(),
        }
    }

    /// The content is complete: hand the transaction over, or refuse it.
    fn end_of_data(&mut self, out: &mut Out) {
        self.state = State::Command;
        let Some(mut envelope) = self.envelope.take() else {
            return;
        };
        let Some(mut content) = envelope.content.take() else {
            return;
        };
        if let Some(reply) = content.refusal() {
            content.discard(out);
            return self.reject(reply, out);
        }
        let protocol = match (
            self.esmtp,
            self.is_tls(),
            self.facts.authenticated.is_some(),
        ) {
            (false, _, _) => Protocol::Smtp,
            (true, false, false) => Protocol::Esmtp,
            (true, true, false) => Protocol::Esmtps,
            (true, false, true) => Protocol::Esmtpa,
            (true, true, true) => Protocol::Esmtpsa,
        };
        let transaction = Transaction {
            helo: self.facts.helo.clone().unwrap_or_default(),
            protocol,
            peer: self.facts.peer,
            tls: self.facts.tls.clone(),
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt_to,
            eight_bit: envelope.eight_bit,
            smtputf8: envelope.smtputf8,
            dsn: envelope.dsn,
            rcpt_dsn: envelope.rcpt_dsn,
            requiretls: envelope.requiretls,
            authenticated: self.facts.authenticated.clone(),
            inbound: envelope.inbound,
            size: content.receiver.size() as u64,
            chunking: content.chunked,
            in_flight: content.reservation,
        };
        self.state = State::AwaitDelivery;
        out.0.push(Action::Deliver(Box::new(transaction)));
    }

    /// Drops the transaction in progress (RSET, HELO/EHLO), and its content if it has any.
    pub(super) fn drop_transaction(&mut self, out: &mut Out) {
        if let Some(mut envelope) = self.envelope.take() {
            if let Some(content) = envelope.content.as_mut() {
                content.discard(out);
            }
        }
    }
}
