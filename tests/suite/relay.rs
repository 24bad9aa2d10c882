//! End-to-end relay over real sockets: two domains, STARTTLS on each hop, durable queue,
//! deferral and flush, crash recovery after kill -9.

use crate::support;

use std::time::Duration;

use support::domains::{
    files_containing, free_port, load, message, sealpost, send, start_pair, wait_for_mailbox_async,
    DomainSpec, Pair, ServeProcess,
};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_between_domains_with_tls_on_each_hop() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        contoso: c_server,
        fabrikam: f_server,
        fabrikam_data: f_data,
        fabrikam_config: fabrikam,
        ..
    } = start_pair(dir.path(), "", "").await;

    let data = message("alice@contoso.test", "bob@fabrikam.test", "M-relay-1");
    let (replies, tls) = send(
        c_server.local_addrs()[0],
        "alice@contoso.test",
        &["bob@fabrikam.test", "dave@fabrikam.test"],
        &data,
    )
    .await;
    assert_eq!(tls, "TLSv1.3");
    for r in &replies {
        let r = r.as_ref().expect("accepted");
        assert_eq!((r.code, r.enhanced), (250, Some([2, 0, 0])), "{r}");
        assert!(r.text.starts_with("Ok: queued as "), "{r}");
    }

    for mailbox in ["bob@fabrikam.test", "dave@fabrikam.test"] {
        let got = wait_for_mailbox_async(&f_data, mailbox, 1, WAIT).await;
        let text = String::from_utf8_lossy(&got[0]).into_owned();
        // Two Received headers: fabrikam's (newest, first) for the contoso → fabrikam hop, then contoso's.
        let received: Vec<&str> = text
            .match_indices("Received: ")
            .map(|(i, _)| &text[i..])
            .collect();
        assert_eq!(received.len(), 2, "{text}");
        assert!(
            received[0].contains("by mx.fabrikam.test (sealpost) with ESMTPS"),
            "{text}"
        );
        assert!(
            received[0].starts_with("Received: from mx.contoso.test"),
            "{text}"
        );
        assert!(
            text.contains("(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)"),
            "{text}"
        );
        assert!(
            received[1].contains("by mx.contoso.test (sealpost) with ESMTPS"),
            "{text}"
        );
        // The body arrives byte for byte, dot-stuffing undone.
        assert!(
            got[0].ends_with(b"\r\n\r\nbody M-relay-1\r\n.leading dot\r\n"),
            "{text}"
        );
    }
    // The mailbox commands of the real binary show and print it.
    let fab = fabrikam.to_str().unwrap();
    let (code, list, err) = sealpost(&[
        "mailbox",
        "list",
        "--config",
        fab,
        "--mailbox",
        "bob@fabrikam.test",
    ]);
    assert_eq!(code, 0, "{err}");
    let line = list.lines().next().unwrap_or_default();
    assert!(
        line.contains("alice@contoso.test") && line.contains("test M-relay-1"),
        "{list}"
    );
    let id = line.split_whitespace().next().unwrap();
    let (code, read, err) = sealpost(&[
        "mailbox",
        "read",
        "--config",
        fab,
        "--mailbox",
        "bob@fabrikam.test",
        "--id",
        id,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        read.starts_with(
            "Received: from mx.contoso.test ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher"
        ),
        "{read}"
    );
    let (code, _, err) = sealpost(&[
        "mailbox",
        "read",
        "--config",
        fab,
        "--mailbox",
        "bob@fabrikam.test",
        "--id",
        "FFFF",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no message FFFF"), "{err}");

    // Nothing left in either queue.
    assert!(c_server.spool().list().unwrap().is_empty());
    assert!(f_server.spool().list().unwrap().is_empty());
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_relays_through_both_domains() {
    let dir = tempfile::tempdir().unwrap();
    let Pair {
        contoso: c_server,
        fabrikam: f_server,
        fabrikam_data: f_data,
        ..
    } = start_pair(dir.path(), "", "").await;
    let cport = c_server.local_addrs()[0].port();

    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", {cport}, local_hostname="python.test") as s:
    s.starttls(context=ctx)
    s.ehlo("python.test")
    s.sendmail("alice@contoso.test", ["bob@fabrikam.test"], "Subject: from python PY-MARKER\r\n\r\nhello\r\n")
    print(s.sock.version())
"#
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "TLSv1.3");
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("Subject: from python PY-MARKER"));
    assert!(
        text.contains("Received: from python.test ([127.0.0.1])\r\n\t(using TLSv1.3"),
        "{text}"
    );
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_down_defers_then_queue_flush_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let (cport, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .write(dir.path());
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport)
        .route("contoso.test", cport)
        .write(dir.path());
    let contoso_arg = contoso.to_str().unwrap();
    let c_config = load(&contoso);
    let c_data = c_config.data_dir.clone();
    let c_server = sealpost::app::start(c_config).await.unwrap();

    let marker = "M-deferred-QENC-c0ffee";
    let data = message("alice@contoso.test", "bob@fabrikam.test", marker);
    let (replies, _) = send(
        c_server.local_addrs()[0],
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        &data,
    )
    .await;
    let queue_id = replies[0]
        .as_ref()
        .unwrap()
        .text
        .trim_start_matches("Ok: queued as ")
        .to_string();

    // The first attempt fails: `queue list` (the real binary) shows the message and the reason.
    let deadline = std::time::Instant::now() + WAIT;
    let listing = loop {
        let (code, out, err) = sealpost(&["queue", "list", "--config", contoso_arg]);
        assert_eq!(code, 0, "{err}");
        if out.contains("Connection refused") {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no deferral shown:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listing.contains(&queue_id), "{listing}");
    assert!(
        listing.contains("deferred") && listing.contains("bob@fabrikam.test"),
        "{listing}"
    );
    // While it waits, the message rests encrypted: the marker (in Subject, Message-ID and body)
    // is in no file under data_dir, though the queue file is there.
    let queued = ["deferred", "active", "incoming"]
        .iter()
        .any(|state| c_data.join("queue").join(state).join(&queue_id).is_file());
    assert!(queued, "{queue_id} not in the queue");
    assert_eq!(
        files_containing(&c_data, marker.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // Start fabrikam, flush: delivered, queue empty.
    let f = load(&fabrikam);
    let f_data = f.data_dir.clone();
    let f_server = sealpost::app::start(f).await.unwrap();
    let (code, out, err) = sealpost(&["queue", "flush", "--config", contoso_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("made due"), "{out}");
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    // Byte for byte what the client sent, after the two Received headers the hops added.
    assert!(
        got[0].ends_with(&data),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, out, _) = sealpost(&["queue", "list", "--config", contoso_arg]);
        if out.contains("Mail queue is empty") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue not empty:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c_server.shutdown().await;
    f_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_250_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cport, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .write(dir.path());
    let fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport)
        .route("contoso.test", cport)
        .write(dir.path());

    // fabrikam is down: whatever contoso acknowledged can only be in its queue on disk.
    let server = ServeProcess::start(&contoso, cport);
    let addr = format!("127.0.0.1:{cport}").parse().unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let marker = format!("M-crash-{i}");
        let (replies, _) = send(
            addr,
            "alice@contoso.test",
            &["bob@fabrikam.test"],
            &message("alice@contoso.test", "bob@fabrikam.test", &marker),
        )
        .await;
        assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250));
        ids.push(marker);
    }
    server.kill9();

    let f = load(&fabrikam);
    let f_data = f.data_dir.clone();
    let f_server = sealpost::app::start(f).await.unwrap();
    let _restarted = ServeProcess::start(&contoso, cport);
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 3, WAIT).await;
    let all = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    for marker in &ids {
        assert!(
            all.contains(&format!("body {marker}")),
            "{marker} missing after kill -9 and restart"
        );
    }
    f_server.shutdown().await;
}
