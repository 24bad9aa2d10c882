//! The checks of mail from outside are on by default: a config without `[sender_auth]` refuses a
//! spoofed From: under `p=reject` served by a real DNS server (NSD on loopback), and
//! `verify = false` turns them off. DNS trouble never refuses or delays mail beyond a bound: with
//! the resolver unreachable or silent the message is accepted with temperror results, within
//! `[sender_auth] timeout`.

use crate::support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use support::domains::{free_port, load, sealpost, send, wait_for_mailbox_async, DomainSpec};
use support::nsd::Zones;

const WAIT: Duration = Duration::from_secs(20);

/// The first Authentication-Results field of `message`, unfolded, if any.
fn auth_results(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let rest = &text[text.find("Authentication-Results:")?..];
    let mut end = rest.find("\r\n")?;
    while rest[end + 2..].starts_with(['\t', ' ']) {
        end += 2 + rest[end + 2..].find("\r\n")?;
    }
    Some(rest[..end].split_whitespace().collect::<Vec<_>>().join(" "))
}

/// fabrikam with `nameservers` as its DNS and `extra` TOML, and no `[sender_auth]` but what
/// `extra` has. Returns the server, its data dir and its config file.
async fn fabrikam(
    dir: &Path,
    nameservers: Vec<SocketAddr>,
    extra: &str,
) -> (
    sealpost::app::Server,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let mut spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], free_port()).toml(extra);
    spec.nameservers = nameservers;
    spec.check_senders = true;
    let path = spec.write(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.contains("[sender_auth]"),
        extra.contains("[sender_auth]")
    );
    let config = load(&path);
    let data = config.data_dir.clone();
    let server = sealpost::app::start(config).await.expect("start");
    (server, data, path)
}

fn spoof(marker: &str) -> Vec<u8> {
    format!(
        "From: <ceo@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: wire money\r\n\
         Message-ID: <{marker}@client.test>\r\n\r\nnow\r\n"
    )
    .into_bytes()
}

/// The delivered message carrying `marker` in its Message-ID.
fn find<'a>(got: &'a [Vec<u8>], marker: &str) -> &'a [u8] {
    got.iter()
        .find(|m| String::from_utf8_lossy(m).contains(&format!("<{marker}@client.test>")))
        .unwrap_or_else(|| panic!("{marker} not delivered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_reject_is_honoured_without_any_sender_auth_section() {
    let Some(zones) = Zones::start(&[
        (
            "contoso.test",
            "@ TXT \"v=spf1 ip4:192.0.2.1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\n",
        ),
        (
            "testing.test",
            "@ TXT \"v=spf1 ip4:192.0.2.1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject; t=y\"\n",
        ),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, data, path) = fabrikam(dir.path(), vec![zones.addr()], "").await;
    let addr = server.local_addrs()[0];

    let (code, out, err) = sealpost(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("sender checks:"))
        .unwrap_or_else(|| panic!("no sender checks line in {out}"));
    assert!(line.contains("on for mail from outside"), "{line}");
    assert!(line.contains("DMARC policy enforced"), "{line}");
    assert!(line.contains(&format!("DNS {}", zones.addr())), "{line}");
    assert!(line.contains("at most 10s per message"), "{line}");

    // A spoofed contoso.test sender from a client SPF does not allow: p=reject → 550 5.7.1.
    let (replies, _) = send(
        addr,
        "ceo@contoso.test",
        &["bob@fabrikam.test"],
        &spoof("s1"),
    )
    .await;
    let text = replies[0].as_ref().expect_err("refused").to_string();
    assert!(
        text.contains("550") && text.contains("5.7.1") && text.contains("DMARC"),
        "{text}"
    );

    // The same failure under a record in test mode (t=y): quarantined instead of refused.
    let msg = b"From: <ceo@testing.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: t=y\r\n\
Message-ID: <t1@client.test>\r\n\r\nnow\r\n";
    let (replies, _) = send(addr, "ceo@testing.test", &["bob@fabrikam.test"], msg).await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let got = wait_for_mailbox_async(&data, "bob@fabrikam.test", 1, WAIT).await;
    let m = find(&got, "t1");
    let results = auth_results(m).expect("Authentication-Results");
    assert!(results.contains("dmarc=fail"), "{results}");
    assert!(
        String::from_utf8_lossy(m).contains("X-Sealpost-Quarantine: dmarc=fail"),
        "{}",
        String::from_utf8_lossy(m)
    );
    server.shutdown().await;

    // verify = false: the same spoofed message is accepted, unchecked.
    let dir = tempfile::tempdir().unwrap();
    let (server, data, path) = fabrikam(
        dir.path(),
        vec![zones.addr()],
        "[sender_auth]\nverify = false\n",
    )
    .await;
    let (code, out, err) = sealpost(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sender checks: off ([sender_auth] verify = false)"),
        "{out}"
    );
    let (replies, _) = send(
        server.local_addrs()[0],
        "ceo@contoso.test",
        &["bob@fabrikam.test"],
        &spoof("s2"),
    )
    .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let got = wait_for_mailbox_async(&data, "bob@fabrikam.test", 1, WAIT).await;
    assert_eq!(auth_results(find(&got, "s2")), None, "not checked");
    server.shutdown().await;
}

/// Sends a spoofed message to a fabrikam whose only DNS server is `dns`; returns the reply time
/// and the delivered message's Authentication-Results.
async fn through_broken_dns(dns: SocketAddr, extra: &str) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let (server, data, _) = fabrikam(dir.path(), vec![dns], extra).await;
    let start = Instant::now();
    let (replies, _) = send(
        server.local_addrs()[0],
        "ceo@contoso.test",
        &["bob@fabrikam.test"],
        &spoof("d1"),
    )
    .await;
    let took = start.elapsed();
    assert!(replies[0].is_ok(), "DNS trouble never refuses: {replies:?}");
    let got = wait_for_mailbox_async(&data, "bob@fabrikam.test", 1, WAIT).await;
    let results = auth_results(find(&got, "d1")).expect("Authentication-Results");
    server.shutdown().await;
    (took, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_resolver_accepts_with_temperror_within_the_timeout() {
    // Nothing listens on this port (hickory's UDP sockets do not learn of the ICMP port
    // unreachable: each query waits out the resolver's timeout).
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let (took, results) = through_broken_dns(closed, "[sender_auth]\ntimeout = \"2s\"\n").await;
    assert!(results.contains("dmarc=temperror"), "{results}");
    assert!(results.contains("spf=temperror"), "{results}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_resolver_is_cut_off_at_the_timeout() {
    // A server that reads queries and never answers: every lookup would wait out the resolver's
    // own timeouts; the checks give up after [sender_auth] timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent.local_addr().unwrap();
    let (took, results) = through_broken_dns(dns, "[sender_auth]\ntimeout = \"1s\"\n").await;
    assert!(results.contains("dmarc=temperror"), "{results}");
    assert!(
        results.contains("DNS did not answer within 1s"),
        "{results}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    drop(silent);
}
