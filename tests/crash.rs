//! Crash safety of the real binary: clients submit messages to contoso, which relays them to
//! fabrikam's encrypted mailbox, while both servers are killed with SIGKILL at random moments and
//! restarted. Every acknowledged message must arrive; duplicates are counted.
//!
//! Duplicates are counted against the target of at most 0.1% of acknowledged messages. The
//! classic window (RFC 1047) is closed on both sides: whoever receives a message makes it durable
//! (rename, directory fsync) before it answers 250, so a kill of either side between that rename
//! and the sender's removal of its queue file makes the sender send it again — and the receiver
//! recognises the retransmission by its fingerprint (`queue::retransmit`) and answers 250 without
//! a second copy. Local delivery commits a tag of queue id and recipient with the message
//! (`MailStore::deliver_once`), so a queue file delivered again after a kill is not stored twice.
//!
//! The kill schedule is random but seeded: the seed is printed, and `SEALPOST_CRASH_SEED=<seed>`
//! repeats it. The figures go to standard error and to `target/test-reports/crash.txt`.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sealpost::store::MailStore;
use support::crash_marks::{self, receiving_id, token_of, TOKEN_HEADER};
use support::domains::{free_port, open_store, DomainSpec, ServeProcess};
use support::plain_smtp::PlainClient;

/// Messages each client gets acknowledged at least; clients go on sending until the last kill.
const MIN_PER_CLIENT: usize = 100;
/// Concurrent client connections.
const CLIENTS: usize = 4;
/// SIGKILLs of each server.
const KILLS_EACH: usize = 6;
/// Deliveries at once in each server (`[delivery] concurrency`).
const CONCURRENCY: usize = 4;
/// Everything (sending under fire, then draining) must be over by then.
const DEADLINE: Duration = Duration::from_secs(170);

const FROM: &str = "alice@contoso.test";
const TO: &str = "bob@fabrikam.test";

/// What the clients saw: every attempt made, and those that got 250.
#[derive(Default)]
struct Record {
    attempted: HashSet<String>,
    acknowledged: HashSet<String>,
    /// Temporary refusals (4xx) seen, e.g. while a server starts.
    refused: usize,
}

/// One server under test: its config and port, the running process, and its kills.
struct Victim {
    config: PathBuf,
    port: u16,
    process: Option<ServeProcess>,
    kills: usize,
    kills_in_flight: usize,
}

impl Victim {
    fn start(config: PathBuf, port: u16) -> Victim {
        let process = Some(ServeProcess::start(&config, port));
        Victim {
            config,
            port,
            process,
            kills: 0,
            kills_in_flight: 0,
        }
    }

    fn kill_and_restart(&mut self, in_flight: bool, down: Duration) {
        if let Some(p) = self.process.take() {
            p.kill9();
        }
        self.kills += 1;
        self.kills_in_flight += usize::from(in_flight);
        std::thread::sleep(down);
        self.process = Some(ServeProcess::start(&self.config, self.port));
    }
}

#[test]
fn repeated_kill_9_loses_no_acknowledged_mail() {
    let seed = crash_marks::seed();
    to_stderr(&format!(
        "crash test: seed {seed} (SEALPOST_CRASH_SEED={seed} repeats the kill schedule)"
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let deadline = started + DEADLINE;

    let dir = tempfile::tempdir().expect("tempdir");
    let (cport, fport) = (free_port(), free_port());
    let contoso_config = DomainSpec::new("contoso", &[FROM], cport)
        .route("fabrikam.test", fport)
        .write(dir.path());
    let fabrikam_config = DomainSpec::new("fabrikam", &[TO], fport)
        .route("contoso.test", cport)
        .write(dir.path());
    for config in [&contoso_config, &fabrikam_config] {
        let text = std::fs::read_to_string(config).expect("read config");
        let text = text.replace(
            "[delivery]\n",
            &format!("[delivery]\nconcurrency = {CONCURRENCY}\n"),
        );
        std::fs::write(config, text).expect("write config");
    }
    let contoso_data = dir.path().join("contoso-data");
    let fabrikam_data = dir.path().join("fabrikam-data");

    let mut fabrikam = Victim::start(fabrikam_config, fport);
    let mut contoso = Victim::start(contoso_config, cport);

    // Clients: each sends its share until every one of its messages got a 250.
    let record = Arc::new(Mutex::new(Record::default()));
    let kills_pending = Arc::new(AtomicBool::new(true));
    let addr: SocketAddr = format!("127.0.0.1:{cport}").parse().expect("addr");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (record, kills_pending) = (record.clone(), kills_pending.clone());
            std::thread::spawn(move || run_client(c, addr, &record, &kills_pending, deadline))
        })
        .collect();
    let watcher = std::thread::spawn(move || {
        for c in clients {
            if c.join().is_err() {
                return Err("a client panicked");
            }
        }
        Ok(started.elapsed())
    });

    // The kills: a seeded order of victims, uniformly random pauses between them. Each kill
    // waits (briefly) for contoso to have a delivery in flight, so that contoso dies while
    // sending and fabrikam while receiving.
    let mut order: Vec<bool> = (0..KILLS_EACH * 2).map(|i| i % 2 == 0).collect();
    for i in (1..order.len()).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    for kill_contoso in order {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..2000)));
        let down = Duration::from_millis(rng.random_range(0..500));
        let in_flight = wait_for_delivery_in_flight(&contoso_data, Duration::from_secs(5));
        let victim = if kill_contoso {
            &mut contoso
        } else {
            &mut fabrikam
        };
        victim.kill_and_restart(in_flight, down);
        assert!(
            Instant::now() < deadline,
            "the kills took longer than {DEADLINE:?}"
        );
    }
    let kills_done = started.elapsed();
    kills_pending.store(false, Ordering::SeqCst);

    let sent = watcher
        .join()
        .expect("client watcher")
        .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.path().display()));

    // Drain: both queues empty and the mailbox count stable.
    let store = open_store(&fabrikam_data, "test");
    let mut last_count = usize::MAX;
    loop {
        let count = store.count(TO).expect("mailbox count");
        let queued = queued_files(&contoso_data) + queued_files(&fabrikam_data);
        if queued == 0 && count == last_count {
            break;
        }
        last_count = count;
        assert!(
            Instant::now() < deadline,
            "queues not drained after {DEADLINE:?}: {} file(s) in contoso's queue, {} in fabrikam's; \
             logs in {}",
            queued_files(&contoso_data),
            queued_files(&fabrikam_data),
            dir.path().display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Count tokens in the sink.
    // token → the queue id fabrikam gave each copy (from its Received header).
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    let mut unreadable = 0;
    for info in store.list(TO).expect("mailbox list") {
        match store.read(TO, &info.id) {
            Ok(bytes) => match token_of(&bytes) {
                Some(t) => copies.entry(t).or_default().push(receiving_id(&bytes)),
                None => unreadable += 1,
            },
            Err(_) => unreadable += 1,
        }
    }
    let record = record.lock().unwrap_or_else(|p| p.into_inner());
    let acknowledged = record.acknowledged.len();
    let delivered = record
        .acknowledged
        .iter()
        .filter(|t| copies.contains_key(*t))
        .count();
    let missing: Vec<&String> = record
        .acknowledged
        .iter()
        .filter(|t| !copies.contains_key(*t))
        .collect();
    // A duplicate under a second fabrikam queue id was relayed twice by contoso; one under the
    // same id was stored twice by fabrikam's runner.
    let (mut relayed_twice, mut stored_twice) = (0, 0);
    for ids in record.acknowledged.iter().filter_map(|t| copies.get(t)) {
        let distinct: HashSet<&String> = ids.iter().collect();
        relayed_twice += distinct.len() - 1;
        stored_twice += ids.len() - distinct.len();
    }
    let duplicates = relayed_twice + stored_twice;
    let unacked: Vec<&String> = copies
        .keys()
        .filter(|t| !record.acknowledged.contains(*t))
        .collect();
    let unacked_duplicates: usize = unacked.iter().map(|t| copies[*t].len() - 1).sum();
    let never_sent: Vec<&&String> = unacked
        .iter()
        .filter(|t| !record.attempted.contains(**t))
        .collect();
    let corrupt = corrupt_files(&contoso_data) + corrupt_files(&fabrikam_data);
    let bounces = open_store(&contoso_data, "test")
        .count(FROM)
        .expect("contoso mailbox count");

    let summary = format!(
        "crash: seed={seed} acknowledged={acknowledged} delivered={delivered} missing={} \
         duplicates={duplicates} ({:.2}%; relayed twice {relayed_twice}, stored twice {stored_twice}) \
         delivered_without_ack={} (+{unacked_duplicates} extra copies) \
         attempts={} refused_4xx={} corrupt={corrupt} bounces={bounces} unreadable={unreadable} \
         kills: contoso={} ({} with deliveries in flight) fabrikam={} ({} while receiving); \
         kills done at {:.1}s, sending done at {:.1}s, drained at {:.1}s",
        missing.len(),
        duplicates as f64 * 100.0 / acknowledged.max(1) as f64,
        unacked.len(),
        record.attempted.len(),
        record.refused,
        contoso.kills,
        contoso.kills_in_flight,
        fabrikam.kills,
        fabrikam.kills_in_flight,
        kills_done.as_secs_f64(),
        sent.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    to_stderr(&summary);
    write_report("crash.txt", &summary);

    let logs = dir.path().display().to_string();
    if !missing.is_empty() || corrupt > 0 || unreadable > 0 || !never_sent.is_empty() {
        // Keep the servers' logs and data for a look.
        let kept = dir.keep();
        panic!(
            "{summary}\nmissing: {missing:?}\nnever sent but delivered: {never_sent:?}\n\
             data and logs kept in {}",
            kept.display()
        );
    }
    assert!(
        acknowledged >= MIN_PER_CLIENT * CLIENTS,
        "too few messages acknowledged: {summary}"
    );
    assert_eq!(contoso.kills, KILLS_EACH);
    assert_eq!(fabrikam.kills, KILLS_EACH);
    assert!(
        contoso.kills_in_flight >= 1 && fabrikam.kills_in_flight >= 1,
        "no kill hit a delivery in flight: {summary}"
    );
    assert_eq!(
        bounces, 0,
        "no delivery status notification expected; logs in {logs}"
    );
    assert_eq!(
        stored_twice, 0,
        "a queue file was stored twice in the mailbox: {summary}"
    );
    // The target: at most 0.1% of acknowledged messages delivered twice.
    assert!(
        duplicates * 1000 <= acknowledged,
        "more than 0.1% duplicates: {summary}"
    );
}

/// Sends messages one after the other, each retried under a new token until one attempt gets
/// 250, until the kills are over and at least `MIN_PER_CLIENT` were acknowledged.
fn run_client(
    client: usize,
    addr: SocketAddr,
    record: &Mutex<Record>,
    kills_pending: &AtomicBool,
    deadline: Instant,
) {
    let mut conn: Option<PlainClient> = None;
    for m in 0.. {
        if m >= MIN_PER_CLIENT && !kills_pending.load(Ordering::SeqCst) {
            break;
        }
        let mut attempt = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "client {client}: message {m} not acknowledged in time"
            );
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match PlainClient::connect(addr, Duration::from_secs(10)) {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            let token = format!("c{client}-m{m}-a{attempt}");
            attempt += 1;
            lock(record).attempted.insert(token.clone());
            match c.send_mail(FROM, TO, &message(&token)) {
                Ok(r) if r.code == 250 => {
                    lock(record).acknowledged.insert(token);
                    break;
                }
                Ok(r) if r.code / 100 == 4 => {
                    lock(record).refused += 1;
                    conn = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(r) => panic!("client {client}: permanent refusal {r}"),
                Err(_) => conn = None,
            }
        }
    }
    if let Some(c) = conn {
        c.quit();
    }
}

fn message(token: &str) -> Vec<u8> {
    format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: crash {token}\r\n{TOKEN_HEADER}{token}\r\n\r\n\
         token {token}\r\nsome text so that the message is not tiny.\r\n"
    )
    .into_bytes()
}

/// Polls until contoso has a message in `queue/incoming/` or `queue/active/` (a delivery about
/// to start or in flight); false if none turned up within `wait`.
fn wait_for_delivery_in_flight(data: &Path, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let queue = data.join("queue");
        if files_in(&queue.join("active")) + files_in(&queue.join("incoming")) > 0 {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn queued_files(data: &Path) -> usize {
    ["incoming", "active", "deferred"]
        .iter()
        .map(|d| files_in(&data.join("queue").join(d)))
        .sum()
}

fn corrupt_files(data: &Path) -> usize {
    files_in(&data.join("queue/corrupt"))
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A line on standard error even when the test harness captures `eprintln!` (it captures only
/// the print macros), so that CI logs show the figures of a passing run.
fn to_stderr(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Writes `text` to `target/test-reports/<name>` (for CI to show).
fn write_report(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-reports");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(name), format!("{text}\n")));
    if let Err(e) = written {
        eprintln!("cannot write {}: {e}", dir.join(name).display());
    }
}

/// A message for a local mailbox and for a remote domain whose server hangs: contoso stores the
/// local copy, then waits on the remote one and is killed there. After the restart the local
/// recipient must not get the message again: its delivery was recorded before contoso moved on
/// to the next destination.
#[test]
fn kill_9_after_one_destination_does_not_deliver_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (peer_port, connections) = hanging_then_deferring_peer();
    let cport = free_port();
    let config = DomainSpec::new("contoso", &[FROM], cport)
        .route("slow.test", peer_port)
        .write(dir.path());
    let data = dir.path().join("contoso-data");
    let server = ServeProcess::start(&config, cport);

    let addr: SocketAddr = format!("127.0.0.1:{cport}").parse().expect("addr");
    let mut client = PlainClient::connect(addr, Duration::from_secs(10)).expect("connect");
    let reply = client
        .send_mail_to(FROM, &[FROM, "x@slow.test"], &message("two-destinations"))
        .expect("reply");
    assert_eq!(reply.code, 250, "{reply}");
    client.quit();

    // The runner delivered locally and now waits for slow.test's greeting.
    let store = open_store(&data, "test");
    wait_until("the connection to slow.test", || {
        connections.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(store.count(FROM).expect("count"), 1, "local copy stored");
    server.kill9();

    let _server = ServeProcess::start(&config, cport);
    // The next attempt reaches slow.test (which defers the recipient) and ends.
    wait_until(
        "a second attempt at slow.test, then a deferred message",
        || {
            connections.load(Ordering::SeqCst) >= 2
                && files_in(&data.join("queue/active")) == 0
                && files_in(&data.join("queue/incoming")) == 0
                && files_in(&data.join("queue/deferred")) == 1
        },
    );
    assert_eq!(
        store.count(FROM).expect("count"),
        1,
        "the local recipient got the message again after the restart; logs in {}",
        dir.path().display()
    );
}

/// A server whose first connection hangs (accepted, never greeted) and whose later connections
/// defer every recipient with 451; also the count of connections accepted.
fn hanging_then_deferring_peer() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                held.push(stream);
                continue;
            }
            std::thread::spawn(move || {
                let Ok(read) = stream.try_clone() else { return };
                let mut lines = BufReader::new(read);
                let _ = stream.write_all(b"220 slow.test ESMTP\r\n");
                let mut line = String::new();
                while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("RCPT") {
                        b"451 4.3.2 try again later\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = stream.write_all(b"221 2.0.0 bye\r\n");
                        return;
                    } else {
                        b"250 slow.test\r\n"
                    };
                    if stream.write_all(reply).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, count)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}
