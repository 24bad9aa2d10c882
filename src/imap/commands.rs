//! The commands of the authenticated and selected states: folders (SELECT, LIST, STATUS,
//! CREATE, DELETE, RENAME, APPEND) and messages (FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE,
//! CLOSE, UNSELECT).

use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::{Atom, QuotedChar, Tag, Vec1};
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::flag::{Flag, FlagNameAttribute, FlagPerm, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::fetch;
use super::reply::{self, Kind};
use super::session::{Action, Selected, Session, State};
use crate::store::folders::{system, INBOX};
use crate::store::{FlagOp, Flags, FolderMessage, StoreError};

type Out = Result<Vec<Action>, StoreError>;

fn refused(what: &str) -> StoreError {
    StoreError::Policy(what.to_string())
}

/// A mailbox name as text (`INBOX` for INBOX in any case).
pub(super) fn name_of(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => INBOX.to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

/// Whether a sequence set names `value`, `*` being `largest`.
pub(super) fn selects(set: &SequenceSet, value: u32, largest: u32) -> bool {
    let n = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(a) => n(a) == value,
        Sequence::Range(a, b) => {
            let (a, b) = (n(a).min(n(b)), n(a).max(n(b)));
            (a..=b).contains(&value)
        }
    })
}

/// Whether a folder name matches a LIST pattern (`*` anything, `%` anything but `/`).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|i| *i == 0 || name[i - 1] != b'/')
            .any(|i| matches(rest, &name[i..])),
        Some((c, rest)) => name.first() == Some(c) && matches(rest, &name[1..]),
    }
}

impl Session {
    fn mailboxes(&self) -> &[String] {
        match &self.state {
            State::Authenticated { mailboxes, .. } | State::Selected { mailboxes, .. } => mailboxes,
            _ => &[],
        }
    }

    /// (mailbox, folder) for a name: `<address>/<folder>` for the user's other mailboxes, else a
    /// folder of its own. No name reaches a mailbox the user does not have.
    fn resolve(&self, name: &str) -> Result<(String, String), StoreError> {
        let boxes = self.mailboxes();
        let own = boxes.first().ok_or_else(|| refused("no mailbox"))?;
        for other in boxes.iter().skip(1) {
            if let Some(rest) = name
                .get(..other.len())
                .filter(|p| p.eq_ignore_ascii_case(other))
                .and_then(|_| name[other.len()..].strip_prefix('/'))
            {
                return Ok((other.clone(), rest.to_string()));
            }
        }
        Ok((own.clone(), name.to_string()))
    }

    fn selected(&self) -> Result<&Selected, StoreError> {
        match &self.state {
            State::Selected { sel, .. } => Ok(sel),
            _ => Err(refused("No folder selected")),
        }
    }

    pub(super) fn folder_command(&mut self, tag: &Tag<'static>, body: CommandBody<'_>) -> Out {
        match body {
            CommandBody::Select { mailbox, .. } => self.select(tag, &name_of(&mailbox), false),
            CommandBody::Examine { mailbox, .. } => self.select(tag, &name_of(&mailbox), true),
            CommandBody::Create { mailbox } => {
                let (mb, folder) = self.resolve(name_of(&mailbox).trim_end_matches('/'))?;
                self.store.create_folder(&mb, &folder).map(|_| Vec::new())
            }
            CommandBody::Delete { mailbox } => {
                let (mb, folder) = self.resolve(&name_of(&mailbox))?;
                if let Ok(sel) = self.selected() {
                    if sel.mailbox == mb && sel.folder == folder {
                        return Err(refused("Close the folder first"));
                    }
                }
                self.store.delete_folder(&mb, &folder).map(|_| Vec::new())
            }
            CommandBody::Rename { from, to } => {
                let (mb, from) = self.resolve(&name_of(&from))?;
                let (mb2, to) = self.resolve(&name_of(&to))?;
                if mb != mb2 {
                    return Err(refused("Cannot rename across mailboxes"));
                }
                self.store.rename_folder(&mb, &from, &to)?;
                // The selected folder (or one above it) renamed by this session keeps its UIDs:
                // the session follows it under its new name.
                if let State::Selected { sel, .. } = &mut self.state {
                    if sel.mailbox == mb {
                        if sel.folder == from {
                            sel.folder = to;
                        } else if let Some(rest) = sel.folder.strip_prefix(&format!("{from}/")) {
                            sel.folder = format!("{to}/{rest}");
                        }
                    }
                }
                Ok(Vec::new())
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(&name_of(&reference), &mailbox_wildcard),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(&name_of(&reference), &mailbox_wildcard),
            CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. } => Ok(Vec::new()),
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&mailbox, &item_names),
            CommandBody::Append {
                mailbox,
                flags,
                message,
                ..
            } => {
                let (mb, folder) = self.resolve(&name_of(&mailbox))?;
                let bytes = match &message {
                    LiteralOrLiteral8::Literal(l) => l.as_ref().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.as_ref().to_vec(),
                };
                match self
                    .store
                    .append(&mb, &folder, &bytes, &reply::from_flags(&flags))
                {
                    Ok(_) => Ok(self.poll()),
                    Err(StoreError::Index { .. }) => Ok(vec![Action::Send(reply::status(
                        Kind::No,
                        Some(tag),
                        Some(Code::TryCreate),
                        "No such folder",
                    ))]),
                    Err(e) => Err(e),
                }
            }
            CommandBody::Close | CommandBody::Unselect => {
                let close = matches!(body, CommandBody::Close);
                let sel = self.selected()?;
                if close && !sel.read_only {
                    self.store.expunge(&sel.mailbox, &sel.folder, None)?;
                }
                self.leave_folder();
                Ok(Vec::new())
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => self.fetch(&sequence_set, macro_or_item_names, uid),
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => self.store_flags(&sequence_set, kind, response, &flags, uid),
            CommandBody::Expunge => self.expunge(None),
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(&sequence_set)),
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy_or_move(tag, &sequence_set, &mailbox, uid, false),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy_or_move(tag, &sequence_set, &mailbox, uid, true),
            CommandBody::Search { criteria, uid, .. } => self.search(&criteria, uid),
            _ => Err(refused("Command not supported")),
        }
    }

    fn leave_folder(&mut self) {
        if !matches!(self.state, State::Selected { .. }) {
            return;
        }
        if let State::Selected {
            user, mailboxes, ..
        } = std::mem::replace(&mut self.state, State::Logout)
        {
            self.state = State::Authenticated { user, mailboxes };
        }
    }

    fn select(&mut self, tag: &Tag<'static>, name: &str, read_only: bool) -> Out {
        self.leave_folder();
        let (mailbox, folder) = self.resolve(name)?;
        let view = self.store.select(&mailbox, &folder)?;
        let system_flags = vec![
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Seen,
            Flag::Draft,
        ];
        let mut perm: Vec<FlagPerm<'static>> =
            system_flags.iter().cloned().map(FlagPerm::Flag).collect();
        perm.push(FlagPerm::Asterisk);
        let mut out = vec![
            Action::Send(reply::data(Data::Flags(system_flags))),
            Action::Send(reply::status(
                Kind::Ok,
                None,
                Some(Code::PermanentFlags(perm)),
                "Flags permitted",
            )),
            Action::Send(reply::data(Data::Exists(view.messages.len() as u32))),
            Action::Send(reply::data(Data::Recent(0))),
        ];
        if let Some(v) = NonZeroU32::new(view.uid_validity) {
            out.push(Action::Send(reply::status(
                Kind::Ok,
                None,
                Some(Code::UidValidity(v)),
                "UIDs valid",
            )));
        }
        if let Some(n) = NonZeroU32::new(view.uid_next) {
            out.push(Action::Send(reply::status(
                Kind::Ok,
                None,
                Some(Code::UidNext(n)),
                "Predicted next UID",
            )));
        }
        let code = if read_only {
            Code::ReadOnly
        } else {
            Code::ReadWrite
        };
        out.push(Action::Send(reply::status(
            Kind::Ok,
            Some(tag),
            Some(code),
            "SELECT completed",
        )));
        let (user, mailboxes) = match std::mem::replace(&mut self.state, State::Logout) {
            State::Authenticated { user, mailboxes } => (user, mailboxes),
            _ => return Err(refused("not authenticated")),
        };
        self.state = State::Selected {
            user,
            mailboxes,
            sel: Selected {
                mailbox,
                folder: view.name,
                read_only,
                uid_validity: view.uid_validity,
                uids: view.messages.iter().map(|m| m.uid).collect(),
                modseq: view.messages.iter().map(|m| m.modseq).max().unwrap_or(0),
            },
        };
        Ok(out)
    }

    fn list(&self, reference: &str, wildcard: &ListMailbox<'_>) -> Out {
        let pattern = match wildcard {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        let delimiter = QuotedChar::try_from('/').ok();
        if pattern.is_empty() {
            let root = Mailbox::try_from("").map_err(|_| refused("bad name"))?;
            return Ok(vec![Action::Send(reply::data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox: root,
            }))]);
        }
        let pattern = format!("{reference}{pattern}");
        let mut out = Vec::new();
        for (i, mb) in self.mailboxes().iter().enumerate() {
            for f in self.store.folders(mb)? {
                let name = if i == 0 {
                    f.name.clone()
                } else {
                    format!("{mb}/{}", f.name)
                };
                let hit = if f.name == INBOX && i == 0 {
                    matches(pattern.to_ascii_uppercase().as_bytes(), b"INBOX")
                } else {
                    matches(pattern.as_bytes(), name.as_bytes())
                };
                if !hit {
                    continue;
                }
                let mut items: Vec<FlagNameAttribute<'static>> = Vec::new();
                if let Some(special) = f
                    .special
                    .as_deref()
                    .and_then(|s| Atom::try_from(s.trim_start_matches('\\').to_string()).ok())
                {
                    items.push(FlagNameAttribute::from(special));
                }
                let Ok(mailbox) = Mailbox::try_from(name) else {
                    continue;
                };
                out.push(Action::Send(reply::data(Data::List {
                    items,
                    delimiter,
                    mailbox,
                })));
            }
        }
        Ok(out)
    }

    fn status(&self, mailbox: &Mailbox<'_>, names: &[StatusDataItemName]) -> Out {
        let (mb, folder) = self.resolve(&name_of(mailbox))?;
        let view = self.store.select(&mb, &folder)?;
        let count = |bit: i64| view.messages.iter().filter(|m| m.flags.has(bit)).count() as u32;
        let mut items = Vec::new();
        for n in names {
            items.extend(match n {
                StatusDataItemName::Messages => {
                    Some(StatusDataItem::Messages(view.messages.len() as u32))
                }
                StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => {
                    NonZeroU32::new(view.uid_next).map(StatusDataItem::UidNext)
                }
                StatusDataItemName::UidValidity => {
                    NonZeroU32::new(view.uid_validity).map(StatusDataItem::UidValidity)
                }
                StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(
                    view.messages.len() as u32 - count(system::SEEN),
                )),
                StatusDataItemName::Deleted => {
                    Some(StatusDataItem::Deleted(count(system::DELETED)))
                }
                StatusDataItemName::DeletedStorage => Some(StatusDataItem::DeletedStorage(
                    view.messages
                        .iter()
                        .filter(|m| m.flags.has(system::DELETED))
                        .map(|m| m.size)
                        .sum(),
                )),
            });
        }
        Ok(vec![Action::Send(reply::data(Data::Status {
            mailbox: mailbox.clone(),
            items: items.into(),
        }))])
    }

    /// The selected messages a set names, as (sequence number, message), in order.
    pub(super) fn targets(
        &self,
        set: &SequenceSet,
        uid: bool,
    ) -> Result<Vec<(u32, FolderMessage)>, StoreError> {
        let sel = self.selected()?;
        let view = self.store.select(&sel.mailbox, &sel.folder)?;
        let by_uid: HashMap<u32, FolderMessage> =
            view.messages.into_iter().map(|m| (m.uid, m)).collect();
        let largest = if uid {
            sel.uids.last().copied().unwrap_or(0)
        } else {
            sel.uids.len() as u32
        };
        Ok(sel
            .uids
            .iter()
            .enumerate()
            .filter(|(i, u)| selects(set, if uid { **u } else { *i as u32 + 1 }, largest))
            .filter_map(|(i, u)| by_uid.get(u).map(|m| (i as u32 + 1, m.clone())))
            .collect())
    }

    fn fetch(
        &mut self,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        uid: bool,
    ) -> Out {
        let expanded;
        let names = match names {
            MacroOrMessageDataItemNames::Macro(m) => {
                expanded = m;
                expanded.expand()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
        };
        let mut targets = self.targets(set, uid)?;
        let sel = self.selected()?;
        let (mailbox, folder) = (sel.mailbox.clone(), sel.folder.clone());
        if fetch::sets_seen(&names) && !sel.read_only {
            let unseen: Vec<u32> = targets
                .iter()
                .filter(|(_, m)| !m.flags.has(system::SEEN))
                .map(|(_, m)| m.uid)
                .collect();
            if !unseen.is_empty() {
                let seen = Flags {
                    system: system::SEEN,
                    ..Flags::default()
                };
                for m in self
                    .store
                    .set_flags(&mailbox, &folder, &unseen, FlagOp::Add, &seen)?
                {
                    if let Some(t) = targets.iter_mut().find(|(_, t)| t.uid == m.uid) {
                        t.1 = m;
                    }
                }
            }
        }
        let content = fetch::needs_content(&names);
        let whole = fetch::whole_text(&names);
        let mut bytes = Vec::new();
        let mut out = Vec::new();
        for (seq, m) in &targets {
            if let Some((text, others)) = whole.as_ref().filter(|_| m.size > fetch::STREAM_ABOVE) {
                let Some(seq) = NonZeroU32::new(*seq) else {
                    continue;
                };
                let source = self.store.message_source(&mailbox, &folder, m.uid)?;
                let (skip, len) = text.range(source.size());
                source.verify_range(skip, len)?;
                out.push(Action::Send(std::mem::take(&mut bytes)));
                out.push(Action::Stream {
                    head: text.head(seq, fetch::items(others, m, None, uid), len),
                    source,
                    skip,
                    len,
                });
                continue;
            }
            let raw = if content {
                Some(self.store.message(&mailbox, &folder, m.uid)?)
            } else {
                None
            };
            let items = fetch::items(&names, m, raw.as_deref(), uid);
            if let (Some(seq), Ok(items)) = (NonZeroU32::new(*seq), Vec1::try_from(items)) {
                bytes.extend(reply::data(Data::Fetch { seq, items }));
            }
        }
        out.push(Action::Send(bytes));
        Ok(out)
    }

    fn store_flags(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> Out {
        let targets = self.targets(set, uid)?;
        let sel = self.selected()?;
        if sel.read_only {
            return Err(refused("The folder is read-only (EXAMINE)"));
        }
        let op = match kind {
            StoreType::Replace => FlagOp::Replace,
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
        };
        let uids: Vec<u32> = targets.iter().map(|(_, m)| m.uid).collect();
        let changed = self.store.set_flags(
            &sel.mailbox,
            &sel.folder,
            &uids,
            op,
            &reply::from_flags(flags),
        )?;
        if response == StoreResponse::Silent {
            return Ok(Vec::new());
        }
        let names = vec![imap_codec::imap_types::fetch::MessageDataItemName::Flags];
        let mut bytes = Vec::new();
        for m in changed {
            let Some((seq, _)) = targets.iter().find(|(_, t)| t.uid == m.uid) else {
                continue;
            };
            if let (Some(seq), Ok(items)) = (
                NonZeroU32::new(*seq),
                Vec1::try_from(fetch::items(&names, &m, None, uid)),
            ) {
                bytes.extend(reply::data(Data::Fetch { seq, items }));
            }
        }
        Ok(vec![Action::Send(bytes)])
    }

    /// Removes UIDs from the session's view, answering `* n EXPUNGE` for each.
    fn forget(&mut self, removed: &[u32]) -> Vec<Action> {
        let State::Selected { sel, .. } = &mut self.state else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for uid in removed {
            if let Some(i) = sel.uids.iter().position(|u| u == uid) {
                sel.uids.remove(i);
                if let Some(n) = NonZeroU32::new(i as u32 + 1) {
                    out.push(Action::Send(reply::data(Data::Expunge(n))));
                }
            }
        }
        out
    }

    fn expunge(&mut self, set: Option<&SequenceSet>) -> Out {
        let sel = self.selected()?;
        if sel.read_only {
            return Err(refused("The folder is read-only (EXAMINE)"));
        }
        let (mailbox, folder) = (sel.mailbox.clone(), sel.folder.clone());
        let removed = match set {
            None => self.store.expunge(&mailbox, &folder, None)?,
            Some(set) => {
                let uids: Vec<u32> = self
                    .targets(set, true)?
                    .into_iter()
                    .map(|(_, m)| m.uid)
                    .collect();
                self.store.expunge(&mailbox, &folder, Some(&uids))?
            }
        };
        Ok(self.forget(&removed))
    }

    fn copy_or_move(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        to: &Mailbox<'_>,
        uid: bool,
        moving: bool,
    ) -> Out {
        let targets = self.targets(set, uid)?;
        let sel = self.selected()?;
        let (mailbox, folder) = (sel.mailbox.clone(), sel.folder.clone());
        if moving && sel.read_only {
            return Err(refused("The folder is read-only (EXAMINE)"));
        }
        let (to_mb, to_folder) = self.resolve(&name_of(to))?;
        if to_mb != mailbox {
            return Err(refused("Cannot copy or move across mailboxes"));
        }
        let canonical = crate::store::folders::canonical_folder(&to_folder);
        if !self
            .store
            .folders(&to_mb)?
            .iter()
            .any(|f| f.name == canonical)
        {
            return Ok(vec![Action::Send(reply::status(
                Kind::No,
                Some(tag),
                Some(Code::TryCreate),
                "No such folder",
            ))]);
        }
        let uids: Vec<u32> = targets.iter().map(|(_, m)| m.uid).collect();
        if !moving {
            self.store.copy(&mailbox, &folder, &uids, &to_folder)?;
            return Ok(Vec::new());
        }
        let moved: Vec<u32> = self
            .store
            .move_to(&mailbox, &folder, &uids, &to_folder)?
            .into_iter()
            .map(|(from, _)| from)
            .collect();
        Ok(self.forget(&moved))
    }
}
