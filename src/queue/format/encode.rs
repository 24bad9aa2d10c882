//! Writing queue files: the envelope in clear, then the message sealed chunk by chunk from its
//! parts (bytes in memory, or content streamed from a staged file), with the checksum computed on
//! the way out.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use super::chunks::{sealed_len, ChunkSealer};
use super::{MAGIC, MAGIC_V1};
use crate::crypto::keyfile::ServiceKey;
use crate::crypto::sealing::SecretKey;
use crate::queue::envelope::Envelope;

/// Content read piece by piece rather than held in memory.
pub trait StreamPart {
    /// Bytes it yields in all.
    fn size(&self) -> u64;
    /// Calls `f` with every piece, in order.
    fn each_piece(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;
}

/// One piece of a message to write.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    Bytes(&'a [u8]),
    Stream(&'a dyn StreamPart),
}

impl Part<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::Stream(s) => s.size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn each_piece(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match self {
            Part::Bytes(b) => f(b),
            Part::Stream(s) => s.each_piece(f),
        }
    }
}

/// Bytes written go to `inner` and into the checksum.
struct Hashing<'w, W: Write> {
    inner: &'w mut W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write a complete queue file to `out`: version 2, the message sealed under a fresh content key
/// wrapped by `key`; or version 1 in clear when `key` is `None` (tests of the plain format only).
pub fn encode_to<W: Write>(
    out: &mut W,
    envelope: &Envelope,
    message: &[u8],
    key: Option<&ServiceKey>,
) -> io::Result<()> {
    encode_parts_to(out, envelope, &[Part::Bytes(message)], key)
}

/// Like [`encode_to`] for a message made of `parts`, which are read once, in order.
pub fn encode_parts_to<W: Write>(
    out: &mut W,
    envelope: &Envelope,
    parts: &[Part],
    key: Option<&ServiceKey>,
) -> io::Result<()> {
    let json = serde_json::to_vec(envelope)?;
    let total: u64 = parts.iter().map(Part::len).sum();
    let mut out = Hashing {
        inner: out,
        hasher: Sha256::new(),
    };
    out.write_all(if key.is_some() { MAGIC } else { MAGIC_V1 })?;
    out.write_all(format!("E {}\n", json.len()).as_bytes())?;
    out.write_all(&json)?;
    out.write_all(b"\n")?;
    let mut written = 0u64;
    match key {
        Some(service) => {
            let content = SecretKey::generate().map_err(io::Error::other)?;
            let wrapped = service.wrap(&content).map_err(io::Error::other)?;
            let key_line = format!("K {} {}\n", service.id(), hex::encode(wrapped));
            out.write_all(key_line.as_bytes())?;
            out.write_all(format!("M {}\n", sealed_len(total)).as_bytes())?;
            let context = super::seal_context(&envelope.id, &json);
            let mut sealer = ChunkSealer::new(&content, &context).map_err(io::Error::other)?;
            for part in parts {
                part.each_piece(&mut |piece| {
                    written += piece.len() as u64;
                    sealer.push(piece, &mut out)
                })?;
            }
            sealer.finish(&mut out)?;
        }
        None => {
            out.write_all(format!("M {total}\n").as_bytes())?;
            for part in parts {
                part.each_piece(&mut |piece| {
                    written += piece.len() as u64;
                    out.write_all(piece)
                })?;
            }
        }
    }
    if written != total {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message parts yielded {written} bytes, {total} announced"),
        ));
    }
    out.write_all(b"\n")?;
    let digest = hex::encode(out.hasher.finalize());
    let inner = out.inner;
    inner.write_all(b"END ")?;
    inner.write_all(digest.as_bytes())?;
    inner.write_all(b"\n")
}

/// A complete queue file in memory (see [`encode_to`]).
pub fn encode(
    envelope: &Envelope,
    message: &[u8],
    key: Option<&ServiceKey>,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(sealed_len(message.len() as u64) as usize + 1024);
    encode_to(&mut out, envelope, message, key)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::format::decode;

    struct Pieces(Vec<Vec<u8>>);

    impl StreamPart for Pieces {
        fn size(&self) -> u64 {
            self.0.iter().map(|p| p.len() as u64).sum()
        }
        fn each_piece(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
            self.0.iter().try_for_each(|p| f(p))
        }
    }

    fn envelope() -> Envelope {
        Envelope::new(
            "0660DE2B47832D5343F6",
            "a@x.test",
            vec!["b@x.test".into()],
            "h",
            "c",
            1000,
        )
    }

    #[test]
    fn parts_make_the_same_message_as_one_slice() {
        let dir = tempfile::tempdir().unwrap();
        let key = ServiceKey::load_or_create(dir.path()).unwrap();
        let head = b"Received: x\r\nSubject: y\r\n\r\n".to_vec();
        let body: Vec<Vec<u8>> = (0..40).map(|i| vec![b'a' + (i % 26) as u8; 5000]).collect();
        let whole: Vec<u8> = head.iter().chain(body.iter().flatten()).copied().collect();
        let stream = Pieces(body);
        for key in [Some(&key), None] {
            let mut out = Vec::new();
            let parts = [Part::Bytes(&head), Part::Stream(&stream)];
            encode_parts_to(&mut out, &envelope(), &parts, key).unwrap();
            let (env, message) = decode(out, key).unwrap();
            assert_eq!(env, envelope());
            assert_eq!(message, whole);
        }
    }

    #[test]
    fn a_part_that_yields_less_than_announced_is_an_error() {
        struct Short;
        impl StreamPart for Short {
            fn size(&self) -> u64 {
                10
            }
            fn each_piece(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
                f(b"12345")
            }
        }
        let mut out = Vec::new();
        let e = encode_parts_to(&mut out, &envelope(), &[Part::Stream(&Short)], None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
