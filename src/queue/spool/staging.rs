//! Message content on its way in: sealed chunk by chunk under a key that exists only in memory,
//! kept in memory while it is one chunk or less and written to `queue/tmp/` past that, and
//! removed when dropped. The cleanup stage reads it back to write the queue file; a crash leaves
//! only ciphertext nobody can open, which `Spool::recover` deletes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::{Spool, FILE_MODE};
use crate::crypto::sealing::{SecretKey, CHUNK_SIZE};
use crate::queue::error::QueueError;
use crate::queue::format::chunks::{sealed_len, ChunkOpener, ChunkSealer, STRIDE};
use crate::queue::format::StreamPart;
use crate::queue::retransmit::Fingerprinter;

/// The longest header section kept in memory while a message arrives (Postfix's
/// `header_size_limit` is 100 KiB). Past it the cleanup stage reads the whole message.
pub const HEAD_LIMIT: usize = 128 * 1024;

/// The AAD context of staged chunks (the key is fresh per message and never stored).
const CONTEXT: &[u8] = b"sealpost staged message v1";

/// Where sealed chunks go: memory while the message is one chunk or less (most mail), then a
/// file in `tmp/`, written a sealed chunk at a time (so not buffered).
enum Sink {
    Memory(Vec<u8>),
    File(File),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Memory(m) => m.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Memory(_) => Ok(()),
            Sink::File(f) => f.flush(),
        }
    }
}

/// A staged message being written.
pub struct Staging {
    path: PathBuf,
    sink: Option<Sink>,
    key: SecretKey,
    sealer: Option<ChunkSealer>,
    len: u64,
    head: Head,
    fingerprint: Option<Fingerprinter>,
}

/// A staged message completely written; read it with [`Staged::tail`] or [`Staged::load`].
pub struct Staged {
    path: PathBuf,
    /// The sealed content when it never left memory.
    memory: Option<Vec<u8>>,
    key: SecretKey,
    len: u64,
    sealed_len: u64,
    head: Vec<u8>,
    header_len: Option<usize>,
    fingerprint: Option<Fingerprinter>,
}

/// The first bytes of a message, kept until the end of its header section.
struct Head {
    bytes: Vec<u8>,
    /// Length of the header section with its empty line, once found.
    end: Option<usize>,
    /// Past [`HEAD_LIMIT`] without an end.
    overflow: bool,
}

/// The content of a staged message from some offset on, as a part of a queue file.
pub struct Tail<'a> {
    staged: &'a Staged,
    from: u64,
}

impl Spool {
    /// Starts staging a new message (in `tmp/`, mode 0600, once it is larger than a chunk).
    /// `fingerprint`, when given, sees every byte written.
    pub fn stage(&self, fingerprint: Option<Fingerprinter>) -> Result<Staging, QueueError> {
        let path = self.tmp.join(format!(
            "{:016x}{:016x}.stage",
            rand::random::<u64>(),
            rand::random::<u64>()
        ));
        let key = SecretKey::generate().map_err(|e| QueueError::io(&path)(io::Error::other(e)))?;
        let sealer = ChunkSealer::new(&key, CONTEXT)
            .map_err(|e| QueueError::io(&path)(io::Error::other(e)))?;
        Ok(Staging {
            sink: Some(Sink::Memory(Vec::new())),
            path,
            key,
            sealer: Some(sealer),
            len: 0,
            head: Head {
                bytes: Vec::new(),
                end: None,
                overflow: false,
            },
            fingerprint,
        })
    }
}

impl Head {
    fn push(&mut self, data: &[u8]) {
        if self.end.is_some() || self.overflow {
            return;
        }
        let before = self.bytes.len();
        let take = data.len().min(HEAD_LIMIT - before);
        self.bytes.extend_from_slice(&data[..take]);
        // An empty first line: no header fields at all.
        if self.bytes.starts_with(b"\r\n") {
            self.end = Some(2);
        } else {
            let from = before.saturating_sub(3);
            if let Some(i) = self.bytes[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                self.end = Some(from + i + 4);
            }
        }
        match self.end {
            Some(end) => self.bytes.truncate(end),
            None => self.overflow = self.bytes.len() >= HEAD_LIMIT,
        }
    }
}

impl Staging {
    /// Appends content; full chunks are sealed and written.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let (Some(sink), Some(sealer)) = (self.sink.as_mut(), self.sealer.as_mut()) else {
            return Err(io::Error::other("staged message already finished"));
        };
        sealer.push(data, sink)?;
        if let Sink::Memory(sealed) = sink {
            if !sealed.is_empty() {
                // A whole chunk was sealed: the message is larger than one; spill to tmp/.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(FILE_MODE)
                    .open(&self.path)?;
                file.write_all(sealed)?;
                *sink = Sink::File(file);
            }
        }
        self.head.push(data);
        if let Some(f) = self.fingerprint.as_mut() {
            f.update(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the last chunk and flushes the file (not fsynced: the queue file written from it is).
    pub fn finish(mut self) -> io::Result<Staged> {
        let (Some(mut sink), Some(sealer)) = (self.sink.take(), self.sealer.take()) else {
            return Err(io::Error::other("staged message already finished"));
        };
        sealer.finish(&mut sink)?;
        let memory = match sink {
            Sink::Memory(sealed) => Some(sealed),
            Sink::File(_) => None,
        };
        let head = std::mem::take(&mut self.head.bytes);
        // A message whose header section has no end is all header (RFC 5322 §2.1).
        let header_len = match self.head.end {
            Some(end) => Some(end),
            None if !self.head.overflow => Some(head.len()),
            None => None,
        };
        Ok(Staged {
            path: std::mem::take(&mut self.path),
            memory,
            key: self.key.clone(),
            len: self.len,
            sealed_len: sealed_len(self.len),
            head,
            header_len,
            fingerprint: self.fingerprint.take(),
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            // Also after a spill that failed halfway; a message kept in memory has no file.
            self.sink = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Staged {
    /// Bytes of content.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first bytes of the content: its header section, or up to [`HEAD_LIMIT`] bytes of it.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The header section with its empty line (the whole message when it has no body), or
    /// `None` when it is longer than [`HEAD_LIMIT`].
    pub fn header(&self) -> Option<&[u8]> {
        self.header_len.and_then(|n| self.head.get(..n))
    }

    /// The fingerprinter that saw every byte, if one was given.
    pub fn take_fingerprinter(&mut self) -> Option<Fingerprinter> {
        self.fingerprint.take()
    }

    /// The content from `from` on, read when written out.
    pub fn tail(&self, from: u64) -> Tail<'_> {
        Tail {
            staged: self,
            from: from.min(self.len),
        }
    }

    /// The whole content in memory.
    pub fn load(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.each_piece_from(0, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with the content from `from` on, one chunk at a time.
    pub fn each_piece_from(
        &self,
        from: u64,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        match &self.memory {
            Some(sealed) => self.read_from(Cursor::new(sealed.as_slice()), from, f),
            None => self.read_from(File::open(&self.path)?, from, f),
        }
    }

    fn read_from<R: Read + Seek>(
        &self,
        mut reader: R,
        from: u64,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let opener =
            ChunkOpener::new(&self.key, CONTEXT, self.sealed_len).map_err(io::Error::other)?;
        let chunk = CHUNK_SIZE as u64;
        let first = from / chunk;
        let mut skip = (from % chunk) as usize;
        reader.seek(SeekFrom::Start(first * STRIDE))?;
        let mut buf = Vec::with_capacity(STRIDE as usize);
        for index in first..opener.count() {
            let plain = opener.read_chunk(index, &mut reader, &mut buf)?;
            let piece = plain.get(skip..).unwrap_or_default();
            skip = 0;
            if !piece.is_empty() {
                f(piece)?;
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.memory.is_none() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl StreamPart for Tail<'_> {
    fn size(&self) -> u64 {
        self.staged.len - self.from
    }

    fn each_piece(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.staged.each_piece_from(self.from, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::spool::tests::service_key;

    fn staged(spool: &Spool, data: &[u8], piece: usize) -> Staged {
        let mut s = spool.stage(None).unwrap();
        for p in data.chunks(piece) {
            s.write(p).unwrap();
        }
        s.finish().unwrap()
    }

    fn tmp_names(spool: &Spool) -> Vec<String> {
        fs::read_dir(&spool.tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_message_of_one_chunk_or_less_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), service_key()).unwrap();
        for len in [0, 1, 10_000, CHUNK_SIZE] {
            let data: Vec<u8> = (0..len).map(|i| b"abcdefgh\r\n"[i % 10]).collect();
            let s = staged(&spool, &data, 4096);
            assert!(tmp_names(&spool).is_empty(), "{len} bytes");
            assert_eq!(s.load().unwrap(), data);
            assert_eq!(s.len(), len as u64);
        }
        let data = vec![b'x'; CHUNK_SIZE + 1];
        let s = staged(&spool, &data, 4096);
        assert_eq!(tmp_names(&spool).len(), 1, "one byte past a chunk spills");
        assert_eq!(s.load().unwrap(), data);
        drop(s);
        assert!(tmp_names(&spool).is_empty());
    }

    #[test]
    fn staged_content_is_sealed_reads_back_from_any_offset_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), service_key()).unwrap();
        let mut data = b"Subject: STAGE-MARKER-7f1\r\n\r\n".to_vec();
        data.extend((0..300_000).map(|i| b"abcdefgh\r\n"[i % 10]));
        let s = staged(&spool, &data, 7000);
        let names = tmp_names(&spool);
        assert_eq!(names.len(), 1);
        let on_disk = fs::read(spool.tmp.join(&names[0])).unwrap();
        assert!(!on_disk.windows(17).any(|w| w == b"STAGE-MARKER-7f1\r"));
        assert_eq!(s.len(), data.len() as u64);
        assert_eq!(s.header(), Some(&data[..29]));
        assert_eq!(s.load().unwrap(), data);
        for from in [0, 1, 29, 65_535, 65_536, 65_537, 200_000, data.len() as u64] {
            let tail = s.tail(from);
            let mut got = Vec::new();
            tail.each_piece(&mut |p| {
                got.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, &data[from as usize..], "from {from}");
            assert_eq!(tail.size(), (data.len() as u64) - from);
        }
        drop(s);
        assert!(
            tmp_names(&spool).is_empty(),
            "a dropped staged message is removed"
        );
        let unfinished = {
            let mut w = spool.stage(None).unwrap();
            w.write(&data[..CHUNK_SIZE + 10]).unwrap();
            w
        };
        assert_eq!(tmp_names(&spool).len(), 1);
        drop(unfinished);
        assert!(tmp_names(&spool).is_empty(), "an abandoned one too");
    }

    #[test]
    fn the_header_section_is_found_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), service_key()).unwrap();
        let m = b"A: 1\r\nB: 2\r\n\r\nbody\r\n";
        for piece in 1..m.len() {
            assert_eq!(staged(&spool, m, piece).header(), Some(&m[..14]));
        }
        assert_eq!(
            staged(&spool, b"\r\nbody\r\n", 3).header(),
            Some(&b"\r\n"[..])
        );
        assert_eq!(
            staged(&spool, b"A: 1\r\n", 3).header(),
            Some(&b"A: 1\r\n"[..])
        );
        assert_eq!(staged(&spool, b"", 1).header(), Some(&b""[..]));
        let long = vec![b'x'; HEAD_LIMIT + 10];
        assert_eq!(staged(&spool, &long, 5000).header(), None);
    }
}
