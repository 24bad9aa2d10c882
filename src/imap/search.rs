//! SEARCH and UID SEARCH: flags, sequence and UID sets, dates (INTERNALDATE), sizes, and
//! header substrings (FROM, TO, CC, SUBJECT, HEADER) read from the decrypted message.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::search::SearchKey;
use mail_parser::MessageParser;

use super::commands::selects;
use super::reply;
use super::session::{Action, Session};
use crate::store::folders::system;
use crate::store::{FolderMessage, StoreError};

/// One message as a search sees it; its bytes are read only if a key needs them.
struct Candidate<'s> {
    seq: u32,
    m: FolderMessage,
    largest_seq: u32,
    largest_uid: u32,
    load: &'s dyn Fn(u32) -> Result<Vec<u8>, StoreError>,
    raw: Option<Vec<u8>>,
}

impl Candidate<'_> {
    fn header_contains(&mut self, name: &str, needle: &[u8]) -> Result<bool, StoreError> {
        if self.raw.is_none() {
            self.raw = Some((self.load)(self.m.uid)?);
        }
        let raw = self.raw.as_deref().unwrap_or_default();
        let Some(parsed) = MessageParser::default().parse_headers(raw) else {
            return Ok(false);
        };
        let needle = String::from_utf8_lossy(needle).to_lowercase();
        let mut values: Vec<String> = parsed
            .headers_raw()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_lowercase())
            .collect();
        if name.eq_ignore_ascii_case("subject") {
            values.extend(parsed.subject().map(str::to_lowercase));
        }
        Ok(values.iter().any(|v| v.contains(&needle)))
    }

    fn date(&self) -> Option<chrono::NaiveDate> {
        chrono::DateTime::from_timestamp(self.m.internal_date, 0).map(|d| d.date_naive())
    }

    fn matches(&mut self, key: &SearchKey<'_>) -> Result<bool, StoreError> {
        let f = &self.m.flags;
        Ok(match key {
            SearchKey::All => true,
            SearchKey::And(keys) => {
                for k in keys.as_ref() {
                    if !self.matches(k)? {
                        return Ok(false);
                    }
                }
                true
            }
            SearchKey::Or(a, b) => self.matches(a)? || self.matches(b)?,
            SearchKey::Not(k) => !self.matches(k)?,
            SearchKey::SequenceSet(s) => selects(s, self.seq, self.largest_seq),
            SearchKey::Uid(s) => selects(s, self.m.uid, self.largest_uid),
            SearchKey::Seen => f.has(system::SEEN),
            SearchKey::Unseen | SearchKey::New => !f.has(system::SEEN),
            SearchKey::Old | SearchKey::Recent => false,
            SearchKey::Flagged => f.has(system::FLAGGED),
            SearchKey::Unflagged => !f.has(system::FLAGGED),
            SearchKey::Deleted => f.has(system::DELETED),
            SearchKey::Undeleted => !f.has(system::DELETED),
            SearchKey::Answered => f.has(system::ANSWERED),
            SearchKey::Unanswered => !f.has(system::ANSWERED),
            SearchKey::Draft => f.has(system::DRAFT),
            SearchKey::Undraft => !f.has(system::DRAFT),
            SearchKey::Keyword(k) => f.keywords.contains(k.as_ref()),
            SearchKey::Unkeyword(k) => !f.keywords.contains(k.as_ref()),
            SearchKey::Larger(n) => self.m.size > *n as u64,
            SearchKey::Smaller(n) => self.m.size < *n as u64,
            SearchKey::Since(d) => self.date().is_some_and(|x| x >= *d.as_ref()),
            SearchKey::Before(d) => self.date().is_some_and(|x| x < *d.as_ref()),
            SearchKey::On(d) => self.date().is_some_and(|x| x == *d.as_ref()),
            SearchKey::From(s) => self.header_contains("From", s.as_ref())?,
            SearchKey::To(s) => self.header_contains("To", s.as_ref())?,
            SearchKey::Cc(s) => self.header_contains("Cc", s.as_ref())?,
            SearchKey::Bcc(s) => self.header_contains("Bcc", s.as_ref())?,
            SearchKey::Subject(s) => self.header_contains("Subject", s.as_ref())?,
            SearchKey::Header(name, s) => {
                let name = String::from_utf8_lossy(name.as_ref()).into_owned();
                self.header_contains(&name, s.as_ref())?
            }
            _ => return Err(StoreError::Policy("Search key not supported".into())),
        })
    }
}

impl Session {
    pub(super) fn search(
        &mut self,
        criteria: &Vec1<SearchKey<'_>>,
        uid: bool,
    ) -> Result<Vec<Action>, StoreError> {
        let all = imap_codec::imap_types::sequence::SequenceSet::try_from("1:*")
            .map_err(|_| StoreError::Internal("sequence set".into()))?;
        let targets = self.targets(&all, false)?;
        let (largest_seq, largest_uid) = (
            targets.last().map(|(s, _)| *s).unwrap_or(0),
            targets.last().map(|(_, m)| m.uid).unwrap_or(0),
        );
        let (mailbox, folder) = match &self.state {
            super::session::State::Selected { sel, .. } => {
                (sel.mailbox.clone(), sel.folder.clone())
            }
            _ => return Err(StoreError::Policy("No folder selected".into())),
        };
        let store = self.store.clone();
        let load = move |u: u32| store.message(&mailbox, &folder, u);
        let mut found = Vec::new();
        for (seq, m) in targets {
            let mut c = Candidate {
                seq,
                m,
                largest_seq,
                largest_uid,
                load: &load,
                raw: None,
            };
            let mut hit = true;
            for key in criteria.as_ref() {
                if !c.matches(key)? {
                    hit = false;
                    break;
                }
            }
            if hit {
                found.extend(NonZeroU32::new(if uid { c.m.uid } else { seq }));
            }
        }
        Ok(vec![Action::Send(reply::data(Data::Search(found)))])
    }
}
