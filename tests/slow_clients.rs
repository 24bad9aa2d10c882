//! 200 slow clients (slowloris style: one byte at a time) hold connections while a well-behaved
//! client's transactions go through; the slow ones keep being served too. Functional only: the
//! times are measured by `sealpost bench slow-clients`.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

use support::domains::{free_port, load, message, send, wait_for_mailbox_async, DomainSpec};

const SLOW: usize = 200;
/// Slow connections per loopback source address, under the default limit of 50 per address.
const PER_ADDRESS: usize = 40;
const GOOD: usize = 20;
const TRICKLE: Duration = Duration::from_millis(250);
const ALICE: &str = "alice@contoso.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_client_gets_through_while_200_slow_clients_hold_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = DomainSpec::new("contoso", &[ALICE], port).write(dir.path());
    let config = load(&config);
    let data = config.data_dir.clone();
    let server = sealpost::app::start(config).await.expect("start contoso");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    let greeted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = JoinSet::new();
    for i in 0..SLOW {
        let (greeted, stop) = (greeted.clone(), stop.clone());
        slow.spawn(async move { slow_client(i, addr, &greeted, &stop).await });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while greeted.load(Ordering::SeqCst) < SLOW {
        if let Some(Ok(Err(e))) = slow.try_join_next() {
            panic!("a slow client failed before its greeting: {e}");
        }
        assert!(
            Instant::now() < deadline,
            "{} of {SLOW} slow clients greeted after 20 s",
            greeted.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // They are all mid-command now.
    tokio::time::sleep(TRICKLE * 3).await;

    for i in 0..GOOD {
        let marker = format!("GOOD-{i}");
        let (replies, tls) = send(addr, ALICE, &[ALICE], &message(ALICE, ALICE, &marker)).await;
        assert_eq!(
            replies[0].as_ref().map(|r| r.code),
            Ok(250),
            "good transaction {i} with {SLOW} slow clients connected"
        );
        assert_ne!(tls, "none", "the good client used STARTTLS");
    }
    let got = wait_for_mailbox_async(&data, ALICE, GOOD, Duration::from_secs(20)).await;
    let all = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    for i in 0..GOOD {
        assert!(
            all.contains(&format!("body GOOD-{i}\r\n")),
            "GOOD-{i} missing"
        );
    }

    // Every slow connection is still open and served: it finishes its NOOP (answered 250) and
    // QUITs (221).
    stop.store(true, Ordering::SeqCst);
    let mut finished = 0;
    let joined = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(result) = slow.join_next().await {
            let answered = result
                .expect("slow client task")
                .unwrap_or_else(|e| panic!("slow connection not served to the end: {e}"));
            assert!(answered >= 1, "a slow client got no NOOP answered");
            finished += 1;
        }
    })
    .await;
    assert!(joined.is_ok(), "{finished} of {SLOW} slow clients finished");
    assert_eq!(finished, SLOW);
    server.shutdown().await;
}

/// From 127.0.0.(2 + i / PER_ADDRESS): greeting, EHLO, then NOOP commands one byte per
/// `TRICKLE` until `stop`; then QUIT. Returns how many NOOPs were answered.
async fn slow_client(
    i: usize,
    target: SocketAddr,
    greeted: &AtomicUsize,
    stop: &AtomicBool,
) -> Result<usize, String> {
    let last = u8::try_from(2 + i / PER_ADDRESS).map_err(|e| e.to_string())?;
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
        .map_err(|e| format!("bind 127.0.0.{last}: {e}"))?;
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    expect(&mut read, "220").await?;
    greeted.fetch_add(1, Ordering::SeqCst);
    write
        .write_all(b"EHLO slow.test\r\n")
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut read, "250").await?;
    let mut answered = 0;
    while !stop.load(Ordering::SeqCst) || answered == 0 {
        for &b in b"NOOP\r\n" {
            tokio::time::sleep(TRICKLE).await;
            write.write_all(&[b]).await.map_err(|e| e.to_string())?;
        }
        expect(&mut read, "250").await?;
        answered += 1;
    }
    write
        .write_all(b"QUIT\r\n")
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut read, "221").await?;
    Ok(answered)
}

/// Reads one reply (all its lines) and checks its code.
async fn expect(read: &mut BufReader<OwnedReadHalf>, code: &str) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        match read.read_line(&mut line).await {
            Ok(0) => return Err(format!("connection closed while waiting for {code}")),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    if line.starts_with(code) {
        Ok(())
    } else {
        Err(format!("expected {code}, got {}", line.trim_end()))
    }
}
