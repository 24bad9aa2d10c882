//! Encodes server responses with imap-codec.

use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::{Atom, Tag, Vec1};
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::response::{
    Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, Response, Status,
};
use imap_codec::{GreetingCodec, ResponseCodec};

use crate::store::folders::{system, Flags};

#[derive(Clone, Copy)]
pub enum Kind {
    Ok,
    No,
    Bad,
}

pub fn encode(response: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(response).dump()
}

pub fn greeting(text: &str) -> Vec<u8> {
    match Greeting::ok(None, text) {
        Ok(g) => GreetingCodec::default().encode(&g).dump(),
        Err(_) => b"* OK IMAP4rev2 ready\r\n".to_vec(),
    }
}

/// A tagged (or, without a tag, untagged) status response.
pub fn status(kind: Kind, tag: Option<&Tag<'_>>, code: Option<Code<'_>>, text: &str) -> Vec<u8> {
    let tag = tag.cloned();
    let built = match kind {
        Kind::Ok => Status::ok(tag, code, text),
        Kind::No => Status::no(tag, code, text),
        Kind::Bad => Status::bad(tag, code, text),
    };
    match built {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => b"* BAD internal error\r\n".to_vec(),
    }
}

pub fn bye(text: &str) -> Vec<u8> {
    match Status::bye(None, text) {
        Ok(s) => encode(&Response::Status(s)),
        Err(_) => b"* BYE\r\n".to_vec(),
    }
}

pub fn continuation(text: &str) -> Vec<u8> {
    match CommandContinuationRequest::basic(None, text) {
        Ok(c) => encode(&Response::CommandContinuationRequest(c)),
        Err(_) => b"+ \r\n".to_vec(),
    }
}

pub fn data(d: Data<'_>) -> Vec<u8> {
    encode(&Response::Data(d))
}

/// A response code with no representation in imap-types (e.g. PRIVACYREQUIRED).
pub fn code(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

fn atom(s: &str) -> Option<Atom<'static>> {
    Atom::try_from(s.to_string()).ok()
}

pub fn capability(name: &str) -> Option<Capability<'static>> {
    atom(name).map(Capability::from)
}

/// The capabilities for a session's state.
pub fn capabilities(tls: bool, starttls: bool, authenticated: bool) -> Vec1<Capability<'static>> {
    let mut caps = vec![Capability::Imap4Rev1];
    caps.extend(capability("IMAP4rev2"));
    if !authenticated {
        if tls {
            caps.push(Capability::Auth(
                imap_codec::imap_types::auth::AuthMechanism::Plain,
            ));
            caps.push(Capability::SaslIr);
        } else {
            if starttls {
                caps.push(Capability::StartTls);
            }
            caps.push(Capability::LoginDisabled);
        }
    }
    caps.extend([
        Capability::Enable,
        Capability::Idle,
        Capability::Move,
        Capability::Unselect,
    ]);
    caps.extend(capability("SPECIAL-USE"));
    Vec1::unvalidated(caps)
}

/// IMAP flags of a message.
pub fn flags(f: &Flags) -> Vec<Flag<'static>> {
    let mut out = Vec::new();
    for (bit, flag) in [
        (system::SEEN, Flag::Seen),
        (system::ANSWERED, Flag::Answered),
        (system::FLAGGED, Flag::Flagged),
        (system::DELETED, Flag::Deleted),
        (system::DRAFT, Flag::Draft),
    ] {
        if f.has(bit) {
            out.push(flag);
        }
    }
    out.extend(f.keywords.iter().filter_map(|k| atom(k)).map(Flag::Keyword));
    out
}

/// Our flags from IMAP ones (`\Recent` and unknown system flags are ignored).
pub fn from_flags(list: &[Flag<'_>]) -> Flags {
    let mut out = Flags::default();
    for f in list {
        match f {
            Flag::Seen => out.system |= system::SEEN,
            Flag::Answered => out.system |= system::ANSWERED,
            Flag::Flagged => out.system |= system::FLAGGED,
            Flag::Deleted => out.system |= system::DELETED,
            Flag::Draft => out.system |= system::DRAFT,
            Flag::Keyword(a) => {
                out.keywords.insert(a.as_ref().to_string());
            }
            Flag::Extension(_) => {}
        }
    }
    out
}
