//! `sealpost store …` and `sealpost mailbox …` through the real binary, and a relay between two
//! servers after which no marker of the message is found anywhere under data_dir.

use crate::support;

use std::time::Duration;

use support::domains::{free_port, load, sealpost, send, wait_for_mailbox_async, DomainSpec};
use support::stores::{deliver, grep, message, StoreFixture, ALICE, BOSS, CAROL};

fn ok(args: &[&str]) -> String {
    let (code, out, err) = sealpost(args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

#[test]
fn keys_root_new_writes_a_0600_key_file_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.key");
    let p = out.to_str().unwrap();
    let text = ok(&["store", "keys", "root-new", "--out", p]);
    assert!(text.contains("key id"), "{text}");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(sealpost::crypto::keyfile::read_key_file(&out).is_ok());
    let (code, _, err) = sealpost(&["store", "keys", "root-new", "--out", p]);
    assert_ne!(code, 0, "{err}");
}

#[test]
fn mailbox_commands_read_through_the_store_and_report_tampering() {
    let f = StoreFixture::new();
    let store = f.store();
    let ids: Vec<String> = (0..2)
        .map(|i| deliver(&store, ALICE, &message(&format!("cli{i}"), 3000)))
        .collect();
    let c = f.config_arg();
    let list = ok(&["mailbox", "list", "--config", c, "--mailbox", ALICE]);
    assert!(
        list.contains(&ids[0]) && list.contains("report cli1"),
        "{list}"
    );
    let json = ok(&[
        "mailbox",
        "list",
        "--config",
        c,
        "--mailbox",
        ALICE,
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let listed: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{json}");
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())), "{json}");
    assert_eq!(json[0]["size"], 3000, "{json}");
    let read = ok(&[
        "mailbox",
        "read",
        "--config",
        c,
        "--mailbox",
        ALICE,
        "--id",
        &ids[0],
    ]);
    assert_eq!(read.as_bytes(), message("cli0", 3000));

    let out = f.dir.path().join("md");
    let text = ok(&[
        "mailbox",
        "export",
        "--config",
        c,
        "--mailbox",
        ALICE,
        "--maildir",
        out.to_str().unwrap(),
    ]);
    assert!(text.starts_with("2 message(s)"), "{text}");
    assert_eq!(std::fs::read_dir(out.join("new")).unwrap().count(), 2);

    let blob = f.blob_path(&store, ALICE, &ids[1]);
    let mut data = std::fs::read(&blob).unwrap();
    data[100] ^= 0x80;
    std::fs::write(&blob, data).unwrap();
    let (code, _, err) = sealpost(&[
        "mailbox",
        "read",
        "--config",
        c,
        "--mailbox",
        ALICE,
        "--id",
        &ids[1],
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("integrity error") && err.contains(&ids[1]),
        "{err}"
    );
    ok(&[
        "mailbox",
        "read",
        "--config",
        c,
        "--mailbox",
        ALICE,
        "--id",
        &ids[0],
    ]);
    let (code, out, _) = sealpost(&["store", "verify", "--config", c]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("FAILED  {ALICE} {}", ids[1])),
        "{out}"
    );
    assert!(
        out.contains("2 message(s) checked: 1 ok, 1 failed"),
        "{out}"
    );
}

#[test]
fn store_operations_through_the_binary() {
    let f = StoreFixture::new();
    let store = f.store();
    let a = deliver(&store, ALICE, &message("op-a", 500));
    let c1 = deliver(&store, CAROL, &message("op-c", 500));
    let b = deliver(&store, BOSS, &message("op-b", 500));
    drop(store);
    let c = f.config_arg();
    let hashes = f.blob_hashes();
    let read = |m: &str, id: &str| {
        sealpost(&["mailbox", "read", "--config", c, "--mailbox", m, "--id", id])
    };

    let out = ok(&["store", "verify", "--config", c]);
    assert!(out.contains("3 message(s) checked: 3 ok"), "{out}");
    let out = ok(&["store", "policy", "rotate", "p1", "--config", c]);
    assert!(out.contains("generation 1 -> 2; 2 mailbox key(s)"), "{out}");

    let new = f.key("p1-new.key");
    ok(&["store", "keys", "root-new", "--out", new.to_str().unwrap()]);
    let old = f.key("p1-a.key");
    let out = ok(&[
        "store",
        "root",
        "rotate",
        "p1",
        "--config",
        c,
        "--old",
        old.to_str().unwrap(),
        "--new",
        new.to_str().unwrap(),
    ]);
    assert!(out.contains("p1-new.key"), "{out}");
    f.write_config("keys/p1-new.key", "none");
    std::fs::remove_file(&old).unwrap();

    let out = ok(&["store", "mailbox", "set-policy", ALICE, "p2", "--config", c]);
    assert!(out.contains("p1 -> p2"), "{out}");
    for (m, id) in [(ALICE, &a), (CAROL, &c1), (BOSS, &b)] {
        assert_eq!(read(m, id).0, 0, "{m}");
    }
    assert_eq!(f.blob_hashes(), hashes, "no blob rewritten");

    let (code, _, err) = sealpost(&["store", "policy", "revoke", "p1", "--config", c]);
    assert_eq!(code, 2);
    assert!(
        err.contains("1 message(s)") && err.contains("--confirm"),
        "{err}"
    );
    assert_eq!(read(CAROL, &c1).0, 0, "nothing revoked without --confirm");
    let out = ok(&[
        "store",
        "policy",
        "revoke",
        "p1",
        "--config",
        c,
        "--confirm",
    ]);
    assert!(out.contains("1 message(s) became unreadable"), "{out}");
    let (code, _, err) = read(CAROL, &c1);
    assert_eq!(code, 1);
    assert!(err.contains("policy p1 was revoked"), "{err}");
    assert_eq!(read(ALICE, &a).0, 0);

    // alice is configured under p1 (revoked): reencrypt cannot move her back and says so.
    let (code, out, _) = sealpost(&["store", "reencrypt", "--config", c]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("SKIPPED  {ALICE}: policy p1 was revoked")),
        "{out}"
    );
    assert!(out.contains("0 message(s) encrypted; 1 skipped"), "{out}");
    assert_eq!(read(ALICE, &a).0, 0, "still under p2");
    let out = ok(&["store", "audit", "verify", "--config", c]);
    assert!(out.contains("chain intact"), "{out}");
    let log = f.dir.path().join("data.keystore/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"actor\":\"store policy rotate\""), "{text}");
    assert!(text.contains("\"actor\":\"mailbox read\""), "{text}");
    std::fs::write(&log, text.replacen("\"reason\":\"", "\"reason\":\"x", 1)).unwrap();
    let (code, out, _) = sealpost(&["store", "audit", "verify", "--config", c]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("chain BROKEN"), "{out}");
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_mail_rests_encrypted_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (cport, fport) = (free_port(), free_port());
    let cpath = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .write(dir.path());
    let fpath = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport)
        .route("contoso.test", cport)
        .write(dir.path());
    let (cc, fc) = (load(&cpath), load(&fpath));
    let c_data = cc.data_dir.clone();
    let f_data = fc.data_dir.clone();
    let contoso = sealpost::app::start(cc).await.unwrap();
    let fabrikam = sealpost::app::start(fc).await.unwrap();

    let marker = "UNIQUE-MARKER-91c4e7";
    let msg = support::domains::message("alice@contoso.test", "bob@fabrikam.test", marker);
    let (replies, _) = send(
        contoso.local_addrs()[0],
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        &msg,
    )
    .await;
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");
    let got = wait_for_mailbox_async(&f_data, "bob@fabrikam.test", 1, WAIT).await;
    assert!(String::from_utf8_lossy(&got[0]).contains(marker));
    // Give the sending side a moment to finish removing its queue file.
    let deadline = std::time::Instant::now() + WAIT;
    while !grep(&c_data, marker.as_bytes()).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    contoso.shutdown().await;
    fabrikam.shutdown().await;
    let store_hits = grep(&f_data.join("store"), marker.as_bytes());
    assert!(store_hits.is_empty(), "marker in the store: {store_hits:?}");
    let hits = grep(&f_data, marker.as_bytes());
    assert!(
        hits.is_empty(),
        "marker under data_dir (queue encryption is separate work): {hits:?}"
    );
    let list = sealpost(&[
        "mailbox",
        "list",
        "--config",
        fpath.to_str().unwrap(),
        "--mailbox",
        "bob@fabrikam.test",
    ]);
    assert!(list.1.contains(marker), "{list:?}");
}
