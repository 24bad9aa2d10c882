//! Two `sealpost serve` nodes sharing their mailbox store in PostgreSQL (`[storage] backend =
//! "postgres"`): mail delivered by node A is listed and read with node B's configuration
//! (`sealpost mailbox list/read`) and over IMAP from node B (Python's imaplib), flags set through
//! B are seen through A, the audit chain both nodes write verifies, and neither the
//! database dump nor the nodes' data directories hold the message in clear. An IMAP IDLE on one
//! node hears within 2 s of mail the other node delivered (the database's notifications), also
//! after the database restarted.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::admin::{serve_log, wait_listening, wait_log};
use support::domains::{files_containing, free_port, hash, python, sealpost, DomainSpec};
use support::domains::{message, ServeProcess};
use support::pg_nodes::storage_toml;
use support::plain_smtp::PlainClient;
use support::postgres::Cluster;

const ALICE: &str = "alice@contoso.test";
const MARKER: &str = "PGMAILBOX-MARKER-7731";

/// One node: its configuration and ports.
pub(crate) struct Node {
    home: PathBuf,
    config: PathBuf,
    smtp: u16,
    pub(crate) imaps: u16,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.home.join("contoso-data")
    }

    pub(crate) fn start(&self) -> ServeProcess {
        let server = ServeProcess::start(&self.config, self.smtp);
        wait_listening(([127, 0, 0, 1], self.imaps).into(), Duration::from_secs(10));
        server
    }

    fn mailbox(&self, command: &str, extra: &[&str]) -> (i32, String, String) {
        let config = self.config.display().to_string();
        let mut args = vec!["mailbox", command, "--config", &config, "--mailbox", ALICE];
        args.extend_from_slice(extra);
        sealpost(&args)
    }

    /// Runs an imaplib script against this node's imaps listener (`M` logged in as alice).
    fn imap(&self, body: &str) -> String {
        python(&format!(
            r#"
import imaplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL("127.0.0.1", {}, ssl_context=ctx)
M.login("{ALICE}", "alice-pw")
{body}
M.logout()
"#,
            self.imaps
        ))
    }
}

/// Node `name` of contoso under `dir/name`, on `database`, with the root keys of `keys_from`
/// (the first node's) so that every node opens the same policy keys, and the same service key.
pub(crate) fn node(
    cluster: &Cluster,
    dir: &Path,
    database: &str,
    name: &str,
    keys_from: Option<&Node>,
) -> Node {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).expect("node dir");
    let (smtp, imaps) = (free_port(), free_port());
    if let Some(first) = keys_from {
        let (from, to) = (first.home.join("contoso-keys"), home.join("contoso-keys"));
        std::fs::create_dir_all(&to).expect("key dir");
        for k in ["a", "b", "availability"] {
            let file = format!("{k}.key");
            std::fs::copy(from.join(&file), to.join(&file)).expect("copy root key");
        }
    }
    let password = cluster.password_file(dir);
    let toml = format!(
        "{}\n[[listener]]\naddress = \"127.0.0.1:{imaps}\"\nprotocol = \"imaps\"\n\
         [[user]]\nname = \"{ALICE}\"\npassword_hash = \"{}\"\n",
        storage_toml(cluster, database, &password, &format!("node-{name}"), "4s"),
        hash("alice-pw"),
    );
    let config = DomainSpec::new("contoso", &[ALICE], smtp)
        .toml(&toml)
        .write(&home);
    // The service key that seals queue content: the same on every node of one queue.
    let keystore = home.join("contoso-data.keystore");
    match keys_from {
        None => {
            sealpost::crypto::keyfile::ServiceKey::load_or_create(&keystore).expect("service key");
        }
        Some(first) => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&keystore)
                .expect("keystore");
            let theirs = first.home.join("contoso-data.keystore/service.key");
            std::fs::copy(theirs, keystore.join("service.key")).expect("copy service key");
        }
    }
    Node {
        home,
        config,
        smtp,
        imaps,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn mail_delivered_by_one_node_is_read_from_another_and_stored_sealed() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let a = node(&cluster, dir.path(), &database, "a", None);
    let b = node(&cluster, dir.path(), &database, "b", Some(&a));

    // Node A alone receives and delivers the message.
    let server_a = a.start();
    let addr: SocketAddr = ([127, 0, 0, 1], a.smtp).into();
    let mut client = PlainClient::connect(addr, Duration::from_secs(20)).expect("connect");
    let from = "carol@fabrikam.test";
    let reply = client
        .send_mail(from, ALICE, &message(from, ALICE, MARKER))
        .expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    // A second message, large enough that IMAP streams it (above 256 KiB).
    let mut big = format!("From: <{from}>\r\nTo: <{ALICE}>\r\nSubject: big {MARKER}\r\n\r\n");
    for i in 0..5000 {
        big.push_str(&format!("line {i:04} {}\r\n", "x".repeat(60)));
    }
    big.push_str(&format!("end {MARKER}\r\n"));
    let reply = client
        .send_mail(from, ALICE, big.as_bytes())
        .expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    client.quit();

    // B's configuration lists and reads it (B is not even running).
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (code, out, err) = b.mailbox("list", &[]);
        assert_eq!(code, 0, "mailbox list with B's config: {err}");
        if out.matches(MARKER).count() == 2 {
            break out;
        }
        assert!(Instant::now() < deadline, "never delivered: {out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = listed
        .lines()
        .find(|l| l.contains(&format!("test {MARKER}")))
        .and_then(|l| l.split_whitespace().next())
        .expect("an id")
        .to_string();
    let (code, out, err) = b.mailbox("read", &["--id", &id]);
    assert_eq!(code, 0, "mailbox read with B's config: {err}");
    assert!(
        out.contains(&format!("Subject: test {MARKER}")) && out.contains(&format!("body {MARKER}")),
        "{out}"
    );

    // Over IMAP from node B: the message, its body, and a flag set there.
    let server_b = b.start();
    let out = b.imap(&format!(
        r#"
n = int(M.select("INBOX")[1][0])
small = M.search(None, "SUBJECT", "test")[1][0].decode()
big = M.search(None, "SUBJECT", "big")[1][0].decode()
typ, data = M.fetch(small, "(BODY[HEADER.FIELDS (SUBJECT)])")
print(n, data[0][1].decode().strip())
M.store(small, "+FLAGS", "(\\Flagged)")
typ, data = M.fetch(big, "(RFC822.SIZE BODY[])")
body = data[0][1]
print(len(body), data[0][0].decode().split("RFC822.SIZE ")[1].split()[0])
print(body.endswith(b"end {MARKER}\r\n"))
"#
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("2 Subject: test {MARKER}"),
        "IMAP from B: {out}"
    );
    // The large one, streamed from its blob in the database: all of it, as sent.
    let (size, said) = lines[1].split_once(' ').expect("sizes");
    assert_eq!(size, said, "FETCH BODY[] gives RFC822.SIZE bytes: {out}");
    assert!(size.parse::<usize>().expect("size") > big.len(), "{out}");
    assert_eq!(lines[2], "True", "the streamed message ends as sent: {out}");
    // ... seen from node A.
    let out = a.imap(
        r#"
M.select("INBOX")
print(M.uid("SEARCH", "FLAGGED")[1][0].decode(), M.uid("SEARCH", "SUBJECT", "test")[1][0].decode())
"#,
    );
    let (flagged, small) = out.trim().split_once(' ').expect("two UIDs");
    assert_eq!(flagged, small, "A sees the flag set through B: {out}");
    drop(server_b);
    drop(server_a);

    // The audit chain (the key unwraps both nodes made) verifies with either node's keys.
    for n in [&a, &b] {
        let config = n.config.display().to_string();
        let (code, out, err) = sealpost(&["store", "audit", "verify", "--config", &config]);
        assert_eq!(
            code,
            0,
            "store audit verify on {}: {out}{err}",
            n.home.display()
        );
    }
    let writers = cluster.psql(
        &database,
        "SELECT DISTINCT line::json->>'node' FROM audit_line ORDER BY 1",
    );
    assert_eq!(
        writers.trim(),
        "node-a\nnode-b",
        "one chain, both nodes' lines"
    );

    // The shared state is in the database, sealed: the rows and the blob are there, the
    // message is not, neither as text nor as the hex a dump writes bytea in.
    let count = |table: &str| cluster.psql(&database, &format!("SELECT count(*) FROM {table}"));
    assert_eq!(count("store_message").trim(), "2");
    assert_eq!(count("store_blob").trim(), "2");
    assert_eq!(count("mailbox_key").trim(), "1");
    let dump = cluster.dump(&database);
    assert!(
        contains(&dump, b"COPY public.store_blob"),
        "dump without blobs"
    );
    for needle in [
        MARKER.as_bytes().to_vec(),
        hex(MARKER.as_bytes()).into_bytes(),
    ] {
        assert!(
            !contains(&dump, &needle),
            "the dump holds {:?} in clear",
            String::from_utf8_lossy(&needle)
        );
    }
    // Nor do the nodes keep it on disk: no index file, no blob files, nothing with the marker.
    for n in [&a, &b] {
        let data = n.data();
        assert!(!data.join("store/index.sqlite").exists());
        assert!(files_containing(&data, MARKER.as_bytes()).is_empty());
    }
}

/// An IMAP session (Python's imaplib) logged in on a node, in IDLE on INBOX; each `go` written to
/// it starts a clock that stops at the next `* N EXISTS`.
struct Idler {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Idler {
    fn start(node: &Node) -> Idler {
        let script = format!(
            r#"
import imaplib, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL("127.0.0.1", {port}, ssl_context=ctx)
M.login("{ALICE}", "alice-pw")
print("exists", int(M.select("INBOX")[1][0]), flush=True)
M.sock.settimeout(45)
tag = M._new_tag()
M.send(tag + b" IDLE\r\n")
print("continuation", M.readline().decode().strip(), flush=True)
while sys.stdin.readline().strip() == "go":
    t = time.monotonic()
    line = ""
    while not line.endswith("EXISTS"):
        line = M.readline().decode().strip()
    print("news %.3f %s" % (time.monotonic() - t, line), flush=True)
M.send(b"DONE\r\n")
print("done", M.readline().decode().strip(), flush=True)
"#,
            port = node.imaps
        );
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Idler {
            child,
            input,
            output,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.output.read_line(&mut line).expect("read from python");
        line.trim().to_string()
    }

    /// Starts the clock, sends a message through `via`'s SMTP (again until queued: the database
    /// may just be back); returns the seconds until the IDLE said EXISTS, its line, and the
    /// queue id.
    fn deliver_through(&mut self, via: &Node, subject: &str) -> (f64, String, String) {
        writeln!(self.input, "go").expect("write to python");
        self.input.flush().expect("flush");
        let from = "carol@fabrikam.test";
        let addr: SocketAddr = ([127, 0, 0, 1], via.smtp).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            let sent = PlainClient::connect(addr, Duration::from_secs(20)).and_then(|mut c| {
                let reply = c.send_mail(from, ALICE, &message(from, ALICE, subject))?;
                c.quit();
                Ok(reply)
            });
            match sent {
                Ok(reply) if reply.code == 250 => {
                    break reply
                        .text
                        .rsplit("queued as ")
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                }
                other => {
                    assert!(Instant::now() < deadline, "never queued: {other:?}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let news = self.line();
        let (took, line) = news
            .strip_prefix("news ")
            .and_then(|n| n.split_once(' '))
            .unwrap_or_else(|| panic!("no EXISTS in IDLE on the other node: {news:?}"));
        (took.parse().expect("seconds"), line.to_string(), id)
    }
}

impl Drop for Idler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node that delivered queue message `id`, by the nodes' logs; the test proves something
/// only when it is the node the session is not on.
fn delivered_by<'n>(id: &str, nodes: &[(&'n str, &Node)]) -> Vec<&'n str> {
    nodes
        .iter()
        .filter(|(_, n)| {
            std::fs::read_to_string(serve_log(&n.config))
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(id) && l.contains("delivered"))
        })
        .map(|(name, _)| *name)
        .collect()
}

/// Sends a message through node B while A's session is in IDLE until B is the node that
/// delivered it (A scans the shared queue too and may, rarely, claim it first: then A's own
/// delivery woke the session, which proves nothing here, and the next message is tried); how
/// long A's IDLE took to hear of B's delivery. `count` is the mailbox's message count.
fn deliver_by_b(
    idle: &mut Idler,
    b: &Node,
    nodes: &[(&str, &Node)],
    count: &mut usize,
    subject: &str,
) -> f64 {
    for attempt in 1..=3 {
        let (took, line, id) = idle.deliver_through(b, &format!("{subject} ({attempt})"));
        *count += 1;
        assert_eq!(line, format!("* {count} EXISTS"));
        match delivered_by(&id, nodes).as_slice() {
            ["b"] => return took,
            by => eprintln!("{id} was delivered by {by:?}, not B alone; another message"),
        }
    }
    panic!("node B delivered none of three messages");
}

#[test]
fn idle_on_one_node_sees_mail_another_node_delivers_within_two_seconds() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let a = node(&cluster, dir.path(), &database, "a", None);
    let b = node(&cluster, dir.path(), &database, "b", Some(&a));
    let _server_a = a.start();
    let _server_b = b.start();
    let nodes = [("a", &a), ("b", &b)];

    let mut idle = Idler::start(&a);
    assert_eq!(idle.line(), "exists 0");
    assert!(
        idle.line().starts_with("continuation +"),
        "IDLE not accepted"
    );
    // A's listening connection may still be on its way: it is, once a delivery is heard.
    let mut count = 0;
    let took = deliver_by_b(&mut idle, &b, &nodes, &mut count, "idle across nodes 1");
    eprintln!("IDLE on node A saw node B's delivery after {took:.3} s");
    assert!(
        took < 2.0,
        "IDLE on A heard of B's delivery after {took:.3} s"
    );

    // The database restarts while A is in IDLE: A listens again, and hears the next one.
    let log_a = serve_log(&a.config);
    cluster.stop_server();
    wait_log(
        &log_a,
        "not listening for changes made by other nodes",
        1,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(1));
    cluster.start_server();
    wait_log(
        &log_a,
        "listening for changes again",
        1,
        Duration::from_secs(20),
    );
    let took = deliver_by_b(&mut idle, &b, &nodes, &mut count, "idle across nodes 2");
    eprintln!("after the database restart, IDLE on node A saw node B's delivery after {took:.3} s");
    assert!(
        took < 5.0,
        "after the restart, IDLE on A heard of B's delivery after {took:.3} s"
    );

    writeln!(idle.input, "stop").expect("write to python");
    idle.input.flush().expect("flush");
    assert!(idle.line().starts_with("done "), "IDLE ended badly");
    let log = std::fs::read_to_string(&log_a).unwrap_or_default();
    assert_eq!(
        log.matches("not listening for changes made by other nodes")
            .count(),
        1,
        "one warning per outage: {log}"
    );
}

/// A blob opened for reading is fetched from the database a window at a time: reads and seeks
/// anywhere give the stored bytes, and a blob removed under a reader is an error, never a short
/// or partial read.
#[test]
fn a_blob_in_the_database_is_read_a_window_at_a_time() {
    use sealpost::store::backend::pg_blobs::{PgBlobs, WINDOW};
    use sealpost::store::blobs::BlobStore;
    use std::io::{Read, Seek, SeekFrom};
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let settings = cluster.settings(&database, &cluster.password_file(dir.path()));
    let blobs = PgBlobs::new(sealpost::pg::Database::open(&settings).expect("database"));
    let data: Vec<u8> = (0..3 * WINDOW + 12_345)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let name = "00112233445566778899aabbccddeeff";
    blobs.write(name, &data).expect("write");
    assert!(blobs
        .open("ffeeddccbbaa99887766554433221100")
        .expect("open")
        .is_none());

    let (mut reader, len) = blobs.open(name).expect("open").expect("there");
    assert_eq!(len, data.len() as u64);
    let mut all = Vec::new();
    reader.read_to_end(&mut all).expect("read");
    assert!(all == data, "the whole blob, window after window");
    for at in [0, 5, WINDOW - 3, 2 * WINDOW + 17, data.len() - 4] {
        reader.seek(SeekFrom::Start(at as u64)).expect("seek");
        let mut piece = [0u8; 8];
        let n = reader.read(&mut piece).expect("read");
        assert!(n > 0 && piece[..n] == data[at..at + n], "at {at}");
    }
    reader.seek(SeekFrom::End(0)).expect("seek");
    assert_eq!(reader.read(&mut [0u8; 4]).expect("read at the end"), 0);

    // Removed while a reader is open: the window it holds still reads, the next one fails.
    reader.seek(SeekFrom::Start(0)).expect("seek");
    reader.read_exact(&mut [0u8; 16]).expect("read");
    blobs.remove(name).expect("remove");
    reader
        .seek(SeekFrom::Start(2 * WINDOW as u64))
        .expect("seek");
    let err = reader.read(&mut [0u8; 16]).expect_err("the blob is gone");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert!(blobs.open(name).expect("open").is_none());
}
