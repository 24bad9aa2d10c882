//! A write error while queueing (here: the file size limit, as a full disk would do) refuses the
//! message with 451 4.3.0, keeps the session usable, leaves nothing half-written in the queue,
//! and the refused message is never delivered, even after a restart.

use crate::support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealpost::store::MailStore;
use support::domains::{free_port, open_store, DomainSpec, ServeProcess};
use support::plain_smtp::PlainClient;

const ALICE: &str = "alice@contoso.test";
/// The largest file the server may write; the big message's queue file is larger.
const FILE_LIMIT: u64 = 512 * 1024;

/// `sealpost serve` whose files may not grow past `FILE_LIMIT` bytes. SIGXFSZ is ignored (an
/// ignored signal stays ignored across exec), so a write past the limit fails with EFBIG instead
/// of killing the process: the same error path as ENOSPC.
fn serve_with_file_limit(config: &Path, port: u16, log: &Path) -> ServeProcess {
    let log = std::fs::File::create(log).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit, signal), no
    // allocation.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FILE_LIMIT as libc::rlim_t,
                rlim_max: FILE_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ServeProcess::spawn(command, port)
}

fn message(marker: &str, body_len: usize) -> Vec<u8> {
    let mut m =
        format!("From: <{ALICE}>\r\nTo: <{ALICE}>\r\nSubject: {marker}\r\n\r\n{marker}\r\n")
            .into_bytes();
    while m.len() < body_len {
        m.extend_from_slice(&[b'x'; 78]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn write_error_during_data_gives_451_and_keeps_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = DomainSpec::new("contoso", &[ALICE], port).write(dir.path());
    let data = dir.path().join("contoso-data");
    let log = dir.path().join("serve-limited.log");
    let server = serve_with_file_limit(&config, port, &log);

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = PlainClient::connect(addr, Duration::from_secs(30)).expect("connect");
    let big = message("BIG-REFUSED", 2 * FILE_LIMIT as usize);
    let reply = client.send_mail(ALICE, ALICE, &big).expect("reply to DATA");
    assert_eq!(
        (reply.code, reply.enhanced()),
        (451, "4.3.0"),
        "a queue write error is a temporary failure: {reply}"
    );

    // The session goes on: RSET, then a small message is accepted.
    let rset = client.command("RSET").expect("RSET");
    assert_eq!(rset.code, 250, "RSET after the 451: {rset}");
    let small = message("SMALL-ACCEPTED", 200);
    let reply = client.send_mail(ALICE, ALICE, &small).expect("reply");
    assert_eq!(reply.code, 250, "a small message after the 451: {reply}");
    client.quit();

    // Nothing half-written: tmp/ is empty and at most the small message is queued.
    let queue = data.join("queue");
    // (`free.*` files are delivered messages' files kept to be written again.)
    let in_tmp = names_in(&queue.join("tmp"));
    let half_written: Vec<&String> = in_tmp.iter().filter(|n| !n.starts_with("free.")).collect();
    assert!(half_written.is_empty(), "{half_written:?}");
    // Distinct queue ids: the runner may move the small message from incoming/ to active/
    // between two directory reads, and it must not count twice.
    let queued: std::collections::BTreeSet<String> = ["incoming", "active", "deferred"]
        .iter()
        .flat_map(|d| names_in(&queue.join(d)))
        .map(|n| n.split('.').next().unwrap_or_default().to_string())
        .collect();
    assert!(
        queued.len() <= 1,
        "{queued:?}: queue files for one accepted message"
    );
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(
        text.contains("queue write failed") && text.contains("File too large"),
        "the log names the failed queue write and its cause:\n{text}"
    );

    // Restart without the limit: the small message arrives, the refused one never does.
    server.kill9();
    let _server = ServeProcess::start(&config, port);
    let store = open_store(&data, "test");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queued: usize = ["incoming", "active", "deferred"]
            .iter()
            .map(|d| names_in(&queue.join(d)).len())
            .sum();
        if store.count(ALICE).expect("count") >= 1 && queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the small message was not delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // One more runner pass (it scans every second) must not bring anything else.
    std::thread::sleep(Duration::from_millis(1500));
    let list = store.list(ALICE).expect("list");
    assert_eq!(list.len(), 1, "exactly the accepted message was delivered");
    let delivered = store.read(ALICE, &list[0].id).expect("read");
    let delivered = String::from_utf8_lossy(&delivered);
    assert!(delivered.contains("SMALL-ACCEPTED"), "{delivered}");
    assert!(!delivered.contains("BIG-REFUSED"));
    assert!(names_in(&queue.join("corrupt")).is_empty());
}
