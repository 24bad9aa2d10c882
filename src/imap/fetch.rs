//! FETCH data items from a stored message: ENVELOPE and BODYSTRUCTURE from mail-parser, body
//! sections (`BODY[]`, `HEADER`, `HEADER.FIELDS`, `TEXT`, part numbers) cut from the raw bytes.

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_codec::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_codec::imap_types::core::{AString, IString, Literal, NString, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::envelope::{Address, Envelope};
use imap_codec::imap_types::fetch::{MessageDataItem, MessageDataItemName, Part, Section};
use imap_codec::imap_types::flag::FlagFetch;
use imap_codec::imap_types::response::Data;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::reply;
use crate::store::FolderMessage;

/// Whether answering these items needs the message's bytes.
pub fn needs_content(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::Body
                | MessageDataItemName::BodyExt { .. }
                | MessageDataItemName::BodyStructure
                | MessageDataItemName::Envelope
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Header
                | MessageDataItemName::Rfc822Text
        )
    })
}

/// Whether fetching these items sets `\Seen` (a BODY[...] without PEEK, RFC822, RFC822.TEXT).
pub fn sets_seen(names: &[MessageDataItemName<'_>]) -> bool {
    names.iter().any(|n| {
        matches!(
            n,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
        )
    })
}

/// Messages larger than this are sent from the store piece by piece, never held in memory, when
/// a FETCH asks for their whole text (`BODY[]`, `BODY.PEEK[]` or `RFC822`, with or without a
/// partial range) along with items that need no content.
pub const STREAM_ABOVE: u64 = 256 * 1024;

/// The whole-text item of a FETCH that is streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeText {
    /// RFC822 (rather than BODY[]).
    rfc822: bool,
    partial: Option<(u32, NonZeroU32)>,
}

impl WholeText {
    /// The bytes of a message of `size` bytes it sends: (offset, length).
    pub fn range(&self, size: u64) -> (u64, u64) {
        match self.partial {
            None => (0, size),
            Some((start, count)) => {
                let start = u64::from(start).min(size);
                (start, u64::from(count.get()).min(size - start))
            }
        }
    }

    /// The start of a FETCH response that ends with this item's literal of `len` bytes: the other
    /// items (encoded by imap-codec), then the item's name and the literal's announcement. The
    /// literal's bytes and the closing `)\r\n` follow.
    pub fn head(
        &self,
        seq: NonZeroU32,
        others: Vec<MessageDataItem<'static>>,
        len: u64,
    ) -> Vec<u8> {
        let mut head = match Vec1::try_from(others) {
            Ok(items) => {
                let mut h = reply::data(Data::Fetch { seq, items });
                // `* n FETCH (…)\r\n`: reopen the list.
                h.truncate(h.len().saturating_sub(3));
                h.push(b' ');
                h
            }
            Err(_) => format!("* {seq} FETCH (").into_bytes(),
        };
        let name = match (self.rfc822, self.partial) {
            (true, _) => "RFC822".to_string(),
            (false, None) => "BODY[]".to_string(),
            (false, Some((start, _))) => format!("BODY[]<{start}>"),
        };
        head.extend_from_slice(format!("{name} {{{len}}}\r\n").as_bytes());
        head
    }
}

/// When a FETCH asks for one whole-text item and otherwise only items that need no content, that
/// item and the others; `None` when it must be answered from the message in memory.
pub fn whole_text<'a>(
    names: &[MessageDataItemName<'a>],
) -> Option<(WholeText, Vec<MessageDataItemName<'a>>)> {
    let mut whole = None;
    let mut others = Vec::new();
    for n in names {
        let this = match n {
            MessageDataItemName::BodyExt {
                section: None,
                partial,
                ..
            } => WholeText {
                rfc822: false,
                partial: *partial,
            },
            MessageDataItemName::Rfc822 => WholeText {
                rfc822: true,
                partial: None,
            },
            other if needs_content(std::slice::from_ref(other)) => return None,
            other => {
                others.push(other.clone());
                continue;
            }
        };
        if whole.replace(this).is_some() {
            return None;
        }
    }
    whole.map(|w| (w, others))
}

fn nstring(s: Option<&str>) -> NString<'static> {
    match s {
        Some(s) => NString(IString::try_from(s.to_string()).ok()),
        None => NString(None),
    }
}

/// Bytes as a literal (NIL if they cannot be one).
fn literal(bytes: &[u8]) -> NString<'static> {
    match Literal::try_from(bytes.to_vec()) {
        Ok(l) => NString::from(l),
        Err(_) => NString::from(Literal::unvalidated(bytes.to_vec())),
    }
}

fn istring(s: &str) -> IString<'static> {
    IString::try_from(s.to_string())
        .unwrap_or_else(|_| IString::from(Literal::unvalidated(s.as_bytes().to_vec())))
}

/// The INTERNALDATE of a message.
pub fn internal_date(secs: i64) -> Option<DateTime> {
    let t = chrono::DateTime::from_timestamp(secs, 0)?;
    DateTime::try_from(t.fixed_offset()).ok()
}

/// The items for one message. `raw` is given when `needs_content` said so.
pub fn items(
    names: &[MessageDataItemName<'_>],
    m: &FolderMessage,
    raw: Option<&[u8]>,
    with_uid: bool,
) -> Vec<MessageDataItem<'static>> {
    let parsed = raw.and_then(|r| MessageParser::default().parse(r));
    let mut out = Vec::new();
    if with_uid && !names.iter().any(|n| matches!(n, MessageDataItemName::Uid)) {
        out.extend(NonZeroU32::new(m.uid).map(MessageDataItem::Uid));
    }
    for name in names {
        let item = match name {
            MessageDataItemName::Uid => NonZeroU32::new(m.uid).map(MessageDataItem::Uid),
            MessageDataItemName::Flags => Some(MessageDataItem::Flags(
                reply::flags(&m.flags)
                    .into_iter()
                    .map(FlagFetch::Flag)
                    .collect(),
            )),
            MessageDataItemName::Rfc822Size => Some(MessageDataItem::Rfc822Size(m.size as u32)),
            MessageDataItemName::InternalDate => {
                internal_date(m.internal_date).map(MessageDataItem::InternalDate)
            }
            MessageDataItemName::Envelope => parsed
                .as_ref()
                .map(|p| MessageDataItem::Envelope(envelope(p))),
            MessageDataItemName::BodyStructure => parsed
                .as_ref()
                .map(|p| MessageDataItem::BodyStructure(structure(p, 0))),
            MessageDataItemName::Body => parsed
                .as_ref()
                .map(|p| MessageDataItem::Body(structure(p, 0))),
            MessageDataItemName::BodyExt {
                section, partial, ..
            } => match (raw, parsed.as_ref()) {
                (Some(raw), Some(p)) => {
                    let bytes = section_bytes(raw, p, section.as_ref());
                    let (origin, data) = match partial {
                        Some((start, len)) => {
                            let s = (*start as usize).min(bytes.len());
                            let e = s.saturating_add(len.get() as usize).min(bytes.len());
                            (Some(*start), &bytes[s..e])
                        }
                        None => (None, &bytes[..]),
                    };
                    Some(MessageDataItem::BodyExt {
                        section: section.clone().map(to_static_section),
                        origin,
                        data: literal(data),
                    })
                }
                _ => None,
            },
            MessageDataItemName::Rfc822 => raw.map(|r| MessageDataItem::Rfc822(literal(r))),
            MessageDataItemName::Rfc822Header => match (raw, parsed.as_ref()) {
                (Some(r), Some(p)) => Some(MessageDataItem::Rfc822Header(literal(
                    &r[..p.root_part().offset_body as usize],
                ))),
                _ => None,
            },
            MessageDataItemName::Rfc822Text => match (raw, parsed.as_ref()) {
                (Some(r), Some(p)) => Some(MessageDataItem::Rfc822Text(literal(
                    &r[p.root_part().offset_body as usize..],
                ))),
                _ => None,
            },
            _ => None,
        };
        out.extend(item);
    }
    out
}

fn to_static_section(s: Section<'_>) -> Section<'static> {
    let fields = |v: Vec1<AString<'_>>| {
        Vec1::unvalidated(
            v.into_inner()
                .into_iter()
                .map(|a| {
                    let name = String::from_utf8_lossy(a.as_ref()).into_owned();
                    AString::try_from(name.clone())
                        .unwrap_or_else(|_| AString::String(istring(&name)))
                })
                .collect(),
        )
    };
    match s {
        Section::Part(p) => Section::Part(p),
        Section::Header(p) => Section::Header(p),
        Section::HeaderFields(p, v) => Section::HeaderFields(p, fields(v)),
        Section::HeaderFieldsNot(p, v) => Section::HeaderFieldsNot(p, fields(v)),
        Section::Text(p) => Section::Text(p),
        Section::Mime(p) => Section::Mime(p),
    }
}

/// The part a part number names: (its raw header start, body start, end) in `raw`, and the
/// parsed message it belongs to (for nested messages).
fn find_part<'m>(msg: &'m Message<'m>, path: &[NonZeroU32]) -> Option<&'m MessagePart<'m>> {
    let mut part = msg.root_part();
    let mut msg = msg;
    for n in path {
        let i = n.get() as usize - 1;
        part = match &part.body {
            PartType::Multipart(children) => msg.parts.get(*children.get(i)? as usize)?,
            PartType::Message(inner) if i == 0 => {
                msg = inner;
                match &inner.root_part().body {
                    PartType::Multipart(children) => inner.parts.get(*children.first()? as usize)?,
                    _ => inner.root_part(),
                }
            }
            _ if i == 0 => part,
            _ => return None,
        };
    }
    Some(part)
}

/// The bytes of a section (empty when it names nothing).
fn section_bytes<'r>(
    raw: &'r [u8],
    msg: &Message<'_>,
    section: Option<&Section<'_>>,
) -> Cow<'r, [u8]> {
    let slice = |a: u32, b: u32| -> Cow<'r, [u8]> {
        let (a, b) = ((a as usize).min(raw.len()), (b as usize).min(raw.len()));
        Cow::Borrowed(&raw[a..b.max(a)])
    };
    let root = msg.root_part();
    let part_of = |p: &Option<Part>| match p {
        None => Some(root),
        Some(Part(path)) => find_part(msg, path.as_ref()),
    };
    match section {
        None => Cow::Borrowed(raw),
        Some(Section::Part(Part(path))) => match find_part(msg, path.as_ref()) {
            Some(p) => slice(p.offset_body, p.offset_end),
            None => Cow::Borrowed(&[]),
        },
        Some(Section::Header(p)) => match part_of(p) {
            Some(p) => slice(p.offset_header, p.offset_body),
            None => Cow::Borrowed(&[]),
        },
        Some(Section::Text(p)) => match part_of(p) {
            Some(p) => slice(p.offset_body, p.offset_end),
            None => Cow::Borrowed(&[]),
        },
        Some(Section::Mime(p)) => match part_of(&Some(p.clone())) {
            Some(p) => slice(p.offset_header, p.offset_body),
            None => Cow::Borrowed(&[]),
        },
        Some(Section::HeaderFields(p, names)) | Some(Section::HeaderFieldsNot(p, names)) => {
            let keep = matches!(section, Some(Section::HeaderFields(..)));
            let names: Vec<String> = names
                .as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_lowercase())
                .collect();
            match part_of(p) {
                Some(p) => Cow::Owned(filter_headers(
                    &slice(p.offset_header, p.offset_body),
                    &names,
                    keep,
                )),
                None => Cow::Borrowed(&[]),
            }
        }
    }
}

/// The header fields named (or, with `keep` false, not named), folds kept, then a blank line.
fn filter_headers(header: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut include = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            include = names.contains(&name) == keep;
        }
        if include {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<Address<'static>> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .map(|addr| {
            let email = addr.address.as_deref().unwrap_or_default();
            let (local, host) = email.rsplit_once('@').unwrap_or((email, ""));
            Address {
                name: nstring(addr.name.as_deref()),
                adl: NString(None),
                mailbox: nstring(Some(local)),
                host: nstring(Some(host)),
            }
        })
        .collect()
}

/// The ENVELOPE of a message (RFC 9051 §7.5.2); Sender and Reply-To default to From.
pub fn envelope(m: &Message<'_>) -> Envelope<'static> {
    let from = addresses(m.from());
    let or_from = |v: Vec<Address<'static>>| if v.is_empty() { from.clone() } else { v };
    let raw = |name: &str| m.header_raw(name.to_string()).map(|v| v.trim().to_string());
    Envelope {
        date: nstring(raw("Date").as_deref()),
        subject: nstring(m.subject()),
        sender: or_from(addresses(m.sender())),
        reply_to: or_from(addresses(m.reply_to())),
        from: from.clone(),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        bcc: addresses(m.bcc()),
        in_reply_to: nstring(raw("In-Reply-To").as_deref()),
        message_id: nstring(raw("Message-ID").as_deref()),
    }
}

/// The BODYSTRUCTURE of part `index` of a message.
pub fn structure(m: &Message<'_>, index: usize) -> BodyStructure<'static> {
    let Some(part) = m.parts.get(index) else {
        return text_plain(0, 0);
    };
    let ct = part.content_type();
    let (ty, sub) = match ct {
        Some(ct) => (
            ct.c_type.to_ascii_lowercase(),
            ct.c_subtype.as_deref().unwrap_or("").to_ascii_lowercase(),
        ),
        None => ("text".to_string(), "plain".to_string()),
    };
    if let PartType::Multipart(children) = &part.body {
        let bodies: Vec<BodyStructure<'static>> =
            children.iter().map(|c| structure(m, *c as usize)).collect();
        if !bodies.is_empty() {
            return BodyStructure::Multi {
                bodies: Vec1::unvalidated(bodies),
                subtype: istring(if sub.is_empty() { "mixed" } else { &sub }),
                extension_data: None,
            };
        }
    }
    let raw = m.raw_message();
    let (b, e) = (
        part.offset_body as usize,
        (part.offset_end as usize).min(raw.len()),
    );
    let body = raw.get(b.min(e)..e).unwrap_or_default();
    let lines = body.iter().filter(|c| **c == b'\n').count() as u32;
    let mut params: Vec<(IString<'static>, IString<'static>)> = ct
        .and_then(|c| c.attributes())
        .unwrap_or_default()
        .iter()
        .map(|a| (istring(&a.name.to_ascii_lowercase()), istring(&a.value)))
        .collect();
    if params.is_empty() && ty == "text" {
        params.push((istring("charset"), istring("us-ascii")));
    }
    let basic = BasicFields {
        parameter_list: params,
        id: nstring(part.content_id()),
        description: nstring(part.content_description()),
        content_transfer_encoding: istring(
            &part
                .content_transfer_encoding()
                .unwrap_or("7bit")
                .to_ascii_uppercase(),
        ),
        size: body.len() as u32,
    };
    let specific = match (&part.body, ty.as_str()) {
        (PartType::Message(inner), _) => SpecificFields::Message {
            envelope: Box::new(envelope(inner)),
            body_structure: Box::new(structure(inner, 0)),
            number_of_lines: lines,
        },
        (_, "text") => SpecificFields::Text {
            subtype: istring(&sub),
            number_of_lines: lines,
        },
        _ => SpecificFields::Basic {
            r#type: istring(&ty),
            subtype: istring(if sub.is_empty() { "octet-stream" } else { &sub }),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: None,
    }
}

fn text_plain(size: u32, lines: u32) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istring("charset"), istring("us-ascii"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring("7BIT"),
                size,
            },
            specific: SpecificFields::Text {
                subtype: istring("plain"),
                number_of_lines: lines,
            },
        },
        extension_data: None,
    }
}
