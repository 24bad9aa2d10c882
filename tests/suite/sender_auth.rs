//! Sender authentication over real SMTP and a real DNS server (NSD on loopback): DKIM signatures
//! made by sealpost verify in dkimpy and those made by dkimpy verify in sealpost, as does an ARC
//! seal dkimpy adds as an intermediary; SPF and DMARC
//! results with alignment; DMARC p=reject refuses a spoofed From with 550 5.7.1; transport rules
//! see the results.

use crate::support;

use std::path::Path;

use sealpost::store::MailStore;
use std::time::Duration;

use support::domains::{
    free_port, load, python, sealpost, send, start_specs, wait_for_mailbox_async, DomainSpec, Pair,
};
use support::nsd::{txt, Zones};

const WAIT: Duration = Duration::from_secs(20);

/// dkimpy (Python, with authres for ARC) is needed; under CI it must be there.
fn dkimpy_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import dkim, authres"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let why = "python3 modules dkim and authres are missing (pip install dkimpy authres)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
    }
    ok
}

/// `sealpost keys dkim new`: writes the key, returns the TXT record text it printed.
fn new_dkim_key(out: &Path, domain: &str, selector: &str, algorithm: &str) -> String {
    let (code, stdout, stderr) = sealpost(&[
        "keys",
        "dkim",
        "new",
        "--domain",
        domain,
        "--selector",
        selector,
        "--algorithm",
        algorithm,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("{selector}._domainkey.{domain}. IN TXT")))
        .unwrap_or_else(|| panic!("no record in {stdout}"));
    line.split('"').skip(1).step_by(2).collect::<String>()
}

/// The value of the first Authentication-Results field, unfolded.
fn auth_results(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let start = text
        .find("Authentication-Results:")
        .unwrap_or_else(|| panic!("no Authentication-Results in\n{text}"));
    let rest = &text[start..];
    let mut end = rest.find("\r\n").unwrap();
    while rest[end + 2..].starts_with(['\t', ' ']) {
        end += 2 + rest[end + 2..].find("\r\n").unwrap();
    }
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// dkimpy's verdict on a message, the key record given for `<selector>._domainkey.<domain>`.
fn dkimpy_verify(message: &[u8], name: &str, record: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, message).unwrap();
    python(&format!(
        r#"
import dkim
msg = open({file:?}, "rb").read()
def dns(qname, timeout=5):
    return {record:?}.encode() if qname.decode().rstrip(".") == {name:?} else None
print("verified" if dkim.verify(msg, dnsfunc=dns) else "failed")
"#,
        file = file.display().to_string(),
    ))
}

/// A message signed by dkimpy (RSA key in `key`) for `domain`/`selector`; `tamper` alters one
/// byte of the signed Subject after signing.
fn dkimpy_sign(key: &Path, domain: &str, selector: &str, from: &str, tamper: bool) -> Vec<u8> {
    let out = python(&format!(
        r#"
import dkim, sys
msg = b"From: <{from}>\r\nTo: <bob@fabrikam.test>\r\nSubject: signed by dkimpy\r\nMessage-ID: <py.{tamper}@dkimpy.test>\r\n\r\nHello from dkimpy.\r\n"
sig = dkim.sign(msg, {selector:?}.encode(), {domain:?}.encode(), open({key:?}, "rb").read(),
                canonicalize=(b"relaxed", b"relaxed"), include_headers=[b"from", b"to", b"subject"])
out = sig + msg
if {tamper}:
    out = out.replace(b"Subject: signed by dkimpy", b"Subject: signed by dkimpY")
sys.stdout.write(out.decode())
"#,
        tamper = if tamper { "True" } else { "False" },
        key = key.display().to_string(),
    ));
    out.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}

/// An RSA key dkimpy can sign with (PKCS#1 PEM) and its DKIM key record.
fn openssl_rsa_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("py.key");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
    };
    run(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    let der = run(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(der);
    (key, format!("v=DKIM1; k=rsa; p={p}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signatures_interoperate_with_dkimpy() {
    if !dkimpy_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let contoso_key = dir.path().join("contoso.dkim.key");
    let contoso_record = new_dkim_key(&contoso_key, "contoso.test", "s2026", "rsa");
    let ed_key = dir.path().join("ed.dkim.key");
    let ed_record = new_dkim_key(&ed_key, "contoso.test", "ed2026", "ed25519");
    assert!(
        ed_record.starts_with("v=DKIM1; k=ed25519; p="),
        "{ed_record}"
    );
    let (py_key, py_record) = openssl_rsa_key(dir.path());
    let Some(zones) = Zones::start(&[
        (
            "contoso.test",
            &format!(
                "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\n\
                 s2026._domainkey TXT {}\n",
                txt(&contoso_record)
            ),
        ),
        (
            "dkimpy.test",
            &format!(
                "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n_dmarc TXT \"v=DMARC1; p=none\"\n\
                 py._domainkey TXT {}\n",
                txt(&py_record)
            ),
        ),
    ]) else {
        return;
    };
    let contoso_toml = format!(
        "[[dkim]]\ndomain = \"contoso.test\"\nselector = \"s2026\"\nprivate_key = \"{}\"\n",
        contoso_key.display()
    );
    let Pair {
        contoso,
        fabrikam,
        fabrikam_data,
        ..
    } = start_pair_with_dns(dir.path(), &contoso_toml, zones.addr()).await;

    // 1. Signed by sealpost (contoso), checked by sealpost (fabrikam) and by dkimpy.
    let data = support::domains::message("alice@contoso.test", "bob@fabrikam.test", "M-dkim-1");
    let (replies, _) = send(
        contoso.local_addrs()[0],
        "alice@contoso.test",
        &["bob@fabrikam.test"],
        &data,
    )
    .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let got = wait_for_mailbox_async(&fabrikam_data, "bob@fabrikam.test", 1, WAIT).await;
    let results = auth_results(&got[0]);
    assert!(
        results.starts_with("Authentication-Results: mx.fabrikam.test;"),
        "{results}"
    );
    assert!(
        results.contains("dkim=pass header.d=contoso.test header.s=s2026"),
        "{results}"
    );
    assert!(results.contains("spf=pass"), "{results}");
    assert!(
        results.contains("dmarc=pass header.from=contoso.test"),
        "{results}"
    );
    let name = "s2026._domainkey.contoso.test";
    assert_eq!(
        dkimpy_verify(&got[0], name, &contoso_record).trim(),
        "verified"
    );
    let text = String::from_utf8_lossy(&got[0]);
    let tampered = text.replacen("Subject: test M-dkim-1", "Subject: test M-dkim-2", 1);
    assert_ne!(tampered, text);
    assert_eq!(
        dkimpy_verify(tampered.as_bytes(), name, &contoso_record).trim(),
        "failed"
    );

    // 2. Signed by dkimpy, checked by sealpost: pass, then fail with one altered header byte.
    for (tamper, want) in [
        (false, "dkim=pass header.i=@dkimpy.test header.s=py"),
        (true, "dkim=fail"),
    ] {
        let msg = dkimpy_sign(&py_key, "dkimpy.test", "py", "carol@dkimpy.test", tamper);
        let before = support::domains::open_store(&fabrikam_data, "test")
            .list("bob@fabrikam.test")
            .unwrap()
            .len();
        let (replies, _) = send(
            fabrikam.local_addrs()[0],
            "carol@dkimpy.test",
            &["bob@fabrikam.test"],
            &msg,
        )
        .await;
        assert!(replies[0].is_ok(), "{replies:?}");
        let got =
            wait_for_mailbox_async(&fabrikam_data, "bob@fabrikam.test", before + 1, WAIT).await;
        let newest = got
            .iter()
            .find(|m| {
                let t = String::from_utf8_lossy(m);
                t.contains(&format!(
                    "<py.{}@dkimpy.test>",
                    if tamper { "True" } else { "False" }
                ))
            })
            .expect("the dkimpy message");
        let results = auth_results(newest);
        assert!(results.contains(want), "{results}");
    }
    // 3. Sealed by dkimpy as an ARC intermediary (RFC 8617), checked by sealpost.
    let msg = python(&format!(
        r#"
import dkim, sys
msg = b"Authentication-Results: mx.dkimpy.test; spf=pass smtp.mailfrom=carol@dkimpy.test\r\nFrom: <carol@dkimpy.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: forwarded\r\nMessage-ID: <arc@dkimpy.test>\r\n\r\nforwarded body\r\n"
seal = dkim.arc_sign(msg, b"py", b"dkimpy.test", open({key:?}, "rb").read(), b"mx.dkimpy.test")
sys.stdout.write((b"".join(seal) + msg).decode())
"#,
        key = py_key.display().to_string(),
    ));
    let msg = msg.replace("\r\n", "\n").replace('\n', "\r\n");
    assert!(msg.contains("ARC-Seal:"), "{msg}");
    let (replies, _) = send(
        fabrikam.local_addrs()[0],
        "carol@dkimpy.test",
        &["bob@fabrikam.test"],
        msg.as_bytes(),
    )
    .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let got = wait_for_mailbox_async(&fabrikam_data, "bob@fabrikam.test", 4, WAIT).await;
    let sealed = got
        .iter()
        .find(|m| String::from_utf8_lossy(m).contains("<arc@dkimpy.test>"))
        .expect("the sealed message");
    let results = auth_results(sealed);
    assert!(results.contains("arc=pass"), "{results}");
    contoso.shutdown().await;
    fabrikam.shutdown().await;
}

/// contoso (signing) and fabrikam (checking, with `zones` as its DNS server).
async fn start_pair_with_dns(dir: &Path, contoso_toml: &str, dns: std::net::SocketAddr) -> Pair {
    let fabrikam_toml = "[sender_auth]\nverify = true\n";
    let (cport, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new("contoso", &["alice@contoso.test"], cport)
        .route("fabrikam.test", fport)
        .toml(contoso_toml);
    let mut fabrikam = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], fport)
        .route("contoso.test", cport)
        .toml(fabrikam_toml);
    fabrikam.nameservers = vec![dns];
    start_specs(dir, contoso, fabrikam).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_and_dmarc_results_with_alignment_and_policy() {
    let Some(zones) = Zones::start(&[
        (
            "pass.test",
            "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\n",
        ),
        (
            "fail.test",
            "@ TXT \"v=spf1 ip4:192.0.2.1 -all\"\n_dmarc TXT \"v=DMARC1; p=none\"\n",
        ),
        ("soft.test", "@ TXT \"v=spf1 ~all\"\n"),
        ("none.test", "www A 127.0.0.1\n"),
        (
            "quarantine.test",
            "@ TXT \"v=spf1 -all\"\n_dmarc TXT \"v=DMARC1; p=quarantine\"\n",
        ),
        (
            "overridden.test",
            "@ TXT \"v=spf1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\n",
        ),
        (
            "contoso.test",
            "@ TXT \"v=spf1 ip4:192.0.2.1 -all\"\n_dmarc TXT \"v=DMARC1; p=reject\"\n",
        ),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("dmarc-fail.toml"),
        "name = \"dmarc-fail\"\npriority = 10\n[conditions]\ndmarc = \"fail\"\n\
         [[actions]]\ntype = \"add_header\"\nname = \"X-Dmarc-Failed\"\nvalue = \"yes\"\n",
    )
    .unwrap();
    let port = free_port();
    let mut spec = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], port).toml(&format!(
        "[sender_auth]\nverify = true\n[sender_auth.dmarc_override]\n\"overridden.test\" = \"none\"\n\
         [rules]\ndir = \"{}\"\n",
        rules.display()
    ));
    spec.nameservers = vec![zones.addr()];
    let config = load(&spec.write(dir.path()));
    let data_dir = config.data_dir.clone();
    let server = sealpost::app::start(config).await.expect("start");
    let addr = server.local_addrs()[0];

    // (envelope sender, From:, what the Authentication-Results must say, rule header expected)
    let cases: [(&str, &str, &[&str], bool); 7] = [
        (
            "a@pass.test",
            "a@pass.test",
            &["spf=pass", "dmarc=pass header.from=pass.test"],
            false,
        ),
        (
            "a@fail.test",
            "a@fail.test",
            &["spf=fail", "dmarc=fail", "header.from=fail.test"],
            true,
        ),
        (
            "a@soft.test",
            "a@soft.test",
            &["spf=softfail", "dmarc=none"],
            false,
        ),
        (
            "a@none.test",
            "a@none.test",
            &["spf=none", "dmarc=none"],
            false,
        ),
        // SPF passes for pass.test, but From: is fail.test: not aligned.
        (
            "a@pass.test",
            "a@fail.test",
            &["spf=pass", "dmarc=fail", "header.from=fail.test"],
            true,
        ),
        (
            "a@quarantine.test",
            "a@quarantine.test",
            &[
                "spf=fail",
                "dmarc=fail",
                "header.from=quarantine.test policy.dmarc=quarantine",
            ],
            true,
        ),
        (
            "a@overridden.test",
            "a@overridden.test",
            &[
                "dmarc=fail",
                "header.from=overridden.test policy.dmarc=reject",
            ],
            true,
        ),
    ];
    for (i, (mail_from, from, want, flagged)) in cases.iter().enumerate() {
        let msg = format!(
            "Authentication-Results: mx.fabrikam.test; dkim=pass header.d={from}\r\n\
             From: <{from}>\r\nTo: <bob@fabrikam.test>\r\nSubject: case {i}\r\n\
             Message-ID: <case{i}@client.test>\r\n\r\nbody {i}\r\n"
        );
        let (replies, _) = send(addr, mail_from, &["bob@fabrikam.test"], msg.as_bytes()).await;
        assert!(replies[0].is_ok(), "case {i}: {replies:?}");
        let got = wait_for_mailbox_async(&data_dir, "bob@fabrikam.test", i + 1, WAIT).await;
        let m = got
            .iter()
            .find(|m| String::from_utf8_lossy(m).contains(&format!("<case{i}@client.test>")))
            .expect("delivered");
        let text = String::from_utf8_lossy(m);
        let results = auth_results(m);
        for w in *want {
            assert!(results.contains(w), "case {i}: {w} not in {results}");
        }
        assert_eq!(
            text.matches("Authentication-Results: mx.fabrikam.test")
                .count(),
            1,
            "case {i}: the forged field is dropped, ours kept:\n{text}"
        );
        assert_eq!(
            text.contains("X-Dmarc-Failed: yes"),
            *flagged,
            "case {i}:\n{text}"
        );
        assert_eq!(
            text.contains("X-Sealpost-Quarantine:"),
            *from == "a@quarantine.test",
            "case {i}:\n{text}"
        );
    }

    // A spoofed contoso.test sender from outside: contoso publishes p=reject.
    let msg = b"From: <ceo@contoso.test>\r\nTo: <bob@fabrikam.test>\r\nSubject: wire money\r\n\r\nnow\r\n";
    let (replies, _) = send(addr, "ceo@contoso.test", &["bob@fabrikam.test"], msg).await;
    let err = replies[0].as_ref().expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("550") && text.contains("5.7.1"), "{text}");
    assert!(text.contains("DMARC"), "{text}");
    server.shutdown().await;
}
