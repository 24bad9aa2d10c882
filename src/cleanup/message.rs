//! The message in the cleanup stage: our Received header, then the staged content. Its header
//! section is in memory; the body stays on disk unless a rule needs all of it, and is then read
//! once, counted against the in-flight budget.

use super::apply::{Content, Original};
use super::headers;
use crate::mail::Reply;
use crate::queue::format::Part;
use crate::queue::spool::{Staged, Tail};
use crate::smtp::server::Transaction;

pub(super) struct Message {
    /// Our Received header, then the staged header section (empty once `whole` is loaded).
    head: Vec<u8>,
    /// Bytes of the received header.
    received_len: usize,
    /// Bytes of the received header and the header section; `None` while the header section is
    /// not known (longer than the staging kept in memory).
    head_len: Option<usize>,
    /// Bytes of the staged content.
    content_len: u64,
    /// The received header and all of the content, once loaded.
    whole: Option<Vec<u8>>,
}

impl Message {
    pub(super) fn new(received: String, staged: &Staged) -> Message {
        let received = received.into_bytes();
        let received_len = received.len();
        let mut head = received;
        let head_len = staged.header().map(|h| {
            head.extend_from_slice(h);
            head.len()
        });
        Message {
            head,
            received_len,
            head_len,
            content_len: staged.len(),
            whole: None,
        }
    }

    /// The header section is longer than what was kept in memory while it arrived.
    pub(super) fn header_unknown(&self) -> bool {
        self.head_len.is_none()
    }

    /// Bytes of the whole message.
    pub(super) fn len(&self) -> u64 {
        self.received_len as u64 + self.content_len
    }

    /// Reads all of the staged content into memory (once), after reserving twice its size: the
    /// copy, and as much again for what the rules make of it (decoded parts, an encrypted copy).
    pub(super) fn load(&mut self, tx: &Transaction, staged: &Staged) -> Result<(), Reply> {
        if self.whole.is_some() {
            return Ok(());
        }
        if !tx.in_flight.try_grow_by(self.len().saturating_mul(2)) {
            tracing::warn!(client = %tx.peer, from = %tx.mail_from, size = self.len(),
                "no room in the in-flight budget to hold the message for the transport rules; refused with 451");
            return Err(Reply::new(451, [4, 3, 1], "Insufficient system storage"));
        }
        let mut whole = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        whole.extend_from_slice(&self.head[..self.received_len]);
        let read = staged.each_piece_from(0, &mut |piece| {
            whole.extend_from_slice(piece);
            Ok(())
        });
        if let Err(e) = read {
            tracing::error!(error = %e, client = %tx.peer, "staged message unreadable; refused with 451");
            return Err(Reply::new(451, [4, 3, 0], "Error: queue file write error"));
        }
        let section = headers::section_len(&whole[self.received_len..]);
        self.head_len = Some(self.received_len + section);
        self.head = Vec::new();
        self.whole = Some(whole);
        Ok(())
    }

    /// The message as it arrived (without our Received header), once loaded.
    pub(super) fn arrived(&self) -> Option<&[u8]> {
        self.whole.as_deref().map(|w| &w[self.received_len..])
    }

    /// Writes `fields` after our Received header and drops the arrived header fields that
    /// `drop` names. Only on a loaded message (else nothing changes).
    pub(super) fn restamp(&mut self, fields: &str, drop: impl Fn(&[u8]) -> bool) {
        let head_len = self.head_len();
        let Some(whole) = &self.whole else {
            return;
        };
        let kept = crate::sender_auth::header::without(&whole[self.received_len..head_len], drop);
        let mut out = Vec::with_capacity(whole.len() + fields.len());
        out.extend_from_slice(&whole[..self.received_len]);
        out.extend_from_slice(fields.as_bytes());
        out.extend_from_slice(&kept);
        out.extend_from_slice(&whole[head_len..]);
        self.received_len += fields.len();
        self.head_len = Some(self.received_len + kept.len());
        self.content_len = (out.len() - self.received_len) as u64;
        self.whole = Some(out);
    }

    /// What the rules look at: the whole message when loaded, else the header section.
    pub(super) fn for_rules(&self) -> &[u8] {
        self.whole.as_deref().unwrap_or(&self.head)
    }

    fn head_len(&self) -> usize {
        self.head_len.unwrap_or(self.received_len)
    }

    /// The message as the rules' actions see it.
    pub(super) fn original(&self) -> Original<'_> {
        let head = match &self.whole {
            Some(whole) => &whole[..self.head_len()],
            None => &self.head,
        };
        Original {
            head,
            whole: self.whole.as_deref(),
        }
    }

    /// The staged body, read when written out.
    pub(super) fn tail<'a>(&self, staged: &'a Staged) -> Tail<'a> {
        let from = (self.head_len() - self.received_len) as u64;
        staged.tail(from)
    }

    /// The parts of a copy's queue file.
    pub(super) fn parts<'a>(&'a self, content: &'a Content, tail: &'a Tail) -> Vec<Part<'a>> {
        let body = |whole: &'a [u8]| Part::Bytes(whole.get(self.head_len()..).unwrap_or_default());
        match (content, &self.whole) {
            (Content::Original, Some(whole)) => vec![Part::Bytes(whole)],
            (Content::Original, None) => vec![Part::Bytes(&self.head), Part::Stream(tail)],
            (Content::Head(head), Some(whole)) => vec![Part::Bytes(head), body(whole)],
            (Content::Head(head), None) => vec![Part::Bytes(head), Part::Stream(tail)],
            (Content::Whole(bytes), _) => vec![Part::Bytes(bytes)],
        }
    }
}
