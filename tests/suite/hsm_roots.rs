//! Store root keys in a real PKCS#11 token (SoftHSM2): `keys root new --pkcs11` generates an
//! AES-256 key on the token, a policy names it by URI next to key files, messages are stored and
//! read with the policy key wrapped and unwrapped in the token, the key's value cannot be read
//! out, a token that is gone makes the store take the availability key (audited), and a policy
//! none of whose keys is usable stops the configuration from loading, naming the token.

use crate::support::softhsm;
use crate::support::stores;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sealpost::config::Config;
use sealpost::keys::{KekRef, Pkcs11Uri};
use sealpost::store::kek::Kek;
use sealpost::store::{EncryptedStore, MailStore};

use softhsm::{softhsm, SoftHsm, MODULE};
use stores::{message, ALICE};

fn sealpost(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config in a fresh directory under the token's temp dir: alice's policy `p1` with the given
/// root keys and a file availability key, `[pkcs11]` with `pin` as the PIN source line.
fn write_config(hsm: &SoftHsm, name: &str, roots: [&str; 2], pin: &str) -> PathBuf {
    let dir = hsm.dir().join(name);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for k in ["file-root", "availability"] {
        let path = dir.join(format!("keys/{k}.key"));
        if !path.exists() {
            sealpost::crypto::keyfile::generate_key_file(&path).unwrap();
        }
    }
    let path = dir.join("sealpost.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nhostname = \"mx.a.test\"\ndata_dir = \"data\"\n\
             [[domain]]\nname = \"a.test\"\nencryption_policy = \"p1\"\n\
             [[mailbox]]\naddress = \"{ALICE}\"\n\
             [[encryption_policy]]\nname = \"p1\"\nroot_keys = [\"{}\", \"{}\"]\n\
             availability_key = \"keys/availability.key\"\n\
             [pkcs11]\nmodule = \"{MODULE}\"\n{pin}\n",
            roots[0], roots[1]
        ),
    )
    .unwrap();
    path
}

fn pin_line(hsm: &SoftHsm) -> String {
    format!("pin_file = \"{}\"", hsm.pin_file().display())
}

/// `sealpost keys root new --pkcs11 URI`, checked to succeed; returns what it printed.
fn new_root(config: &Path, uri: &str) -> String {
    let out = sealpost(
        &[
            "keys",
            "root",
            "new",
            "--config",
            config.to_str().unwrap(),
            "--pkcs11",
            uri,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn open(config: &Path) -> EncryptedStore {
    let config = Config::load(config, None).unwrap_or_else(|e| panic!("{e}"));
    EncryptedStore::open(&config, "test").unwrap_or_else(|e| panic!("{e}"))
}

/// A SoftHSM2 configuration whose token directory is empty: the token is gone.
fn no_token_conf(hsm: &SoftHsm) -> PathBuf {
    let dir = hsm.dir().join("gone");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn root_keys_in_the_token_store_and_read_and_the_availability_key_stands_in_when_it_is_gone() {
    let Some(hsm) = softhsm() else { return };
    let (a, b) = (
        "pkcs11:token=sealpost;object=store-root-a",
        "pkcs11:token=sealpost;object=store-root-b",
    );
    let config = write_config(&hsm, "roots", [a, b], &pin_line(&hsm));
    let printed = new_root(&config, a);
    assert!(
        printed.contains("key id") && printed.contains("not extractable"),
        "{printed}"
    );
    new_root(&config, b);
    // The same object name twice is refused.
    let again = sealpost(
        &[
            "keys",
            "root",
            "new",
            "--config",
            config.to_str().unwrap(),
            "--pkcs11",
            a,
        ],
        &[],
    );
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already names an object"),
        "{}",
        text(&again)
    );

    let probe = Kek::open(&KekRef::Token {
        pkcs11: hsm.config(),
        uri: Pkcs11Uri::parse(a).unwrap(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let k = sealpost::crypto::sealing::SecretKey::generate().unwrap();
    let w = probe.wrap(&k).unwrap_or_else(|e| panic!("wrap: {e}"));
    assert_eq!(w.len(), 40);
    let back = probe
        .unwrap_key(&w)
        .unwrap_or_else(|e| panic!("unwrap: {e}"));
    assert_eq!(back.as_bytes(), k.as_bytes());
    let store = open(&config);
    let msg = message("hsm-root", 5000);
    let id = store.deliver(ALICE, &msg).unwrap();
    assert_eq!(open(&config).read(ALICE, &id).unwrap(), msg);
    let audit = std::fs::read_to_string(store.audit_path().expect("the audit log file")).unwrap();
    assert!(audit.contains("pkcs11:token=sealpost"), "{audit}");
    assert!(!audit.contains("\"key\":\"availability"), "{audit}");

    // The key works only inside the token: its value is refused.
    let uri = Pkcs11Uri::parse(a).unwrap();
    let kek = Kek::open(&KekRef::Token {
        pkcs11: hsm.config(),
        uri,
    })
    .unwrap();
    assert!(matches!(kek.token_value_refused(), Some(Ok(true))));

    // Another process whose token is gone (the module finds no token "sealpost"): the
    // configuration loads with a warning, and the message opens with the availability key.
    let gone = no_token_conf(&hsm);
    let out = sealpost(
        &[
            "mailbox",
            "read",
            "--config",
            config.to_str().unwrap(),
            "--mailbox",
            ALICE,
            "--id",
            &id,
        ],
        &[("SOFTHSM2_CONF", &gone)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, msg);
    let audit = std::fs::read_to_string(store.audit_path().expect("the audit log file")).unwrap();
    let line = audit.lines().last().unwrap();
    assert!(line.contains("\"key\":\"availability"), "{line}");
    assert!(line.contains("both root keys unavailable"), "{line}");
}

#[test]
fn file_and_token_roots_mix_and_each_opens_the_policy_key() {
    let Some(hsm) = softhsm() else { return };
    let token_root = "pkcs11:token=sealpost;object=mixed-root";
    let config = write_config(
        &hsm,
        "mixed",
        ["keys/file-root.key", token_root],
        &pin_line(&hsm),
    );
    new_root(&config, token_root);
    let msg = message("mixed", 300);
    let id = open(&config).deliver(ALICE, &msg).unwrap();
    // Without the file root, the token root opens it (not the availability key).
    let dir = config.parent().unwrap();
    std::fs::rename(
        dir.join("keys/file-root.key"),
        dir.join("keys/file-root.hidden"),
    )
    .unwrap();
    let store = {
        let cfg = Config::load(&config, None);
        // A missing root key file is a configuration error; validate with it, then hide it.
        assert!(cfg.is_err());
        std::fs::rename(
            dir.join("keys/file-root.hidden"),
            dir.join("keys/file-root.key"),
        )
        .unwrap();
        let cfg = Config::load(&config, None).unwrap();
        std::fs::rename(
            dir.join("keys/file-root.key"),
            dir.join("keys/file-root.hidden"),
        )
        .unwrap();
        EncryptedStore::open(&cfg, "test").unwrap()
    };
    assert_eq!(store.read(ALICE, &id).unwrap(), msg);
    let audit = std::fs::read_to_string(store.audit_path().expect("the audit log file")).unwrap();
    let line = audit.lines().last().unwrap();
    assert!(
        line.contains(&format!("\"key\":\"root {token_root}")),
        "{line}"
    );
}

#[test]
fn a_policy_with_no_usable_key_does_not_load_and_names_the_token() {
    let Some(hsm) = softhsm() else { return };
    let (a, b) = (
        "pkcs11:token=sealpost;object=pin-root-a",
        "pkcs11:token=sealpost;object=pin-root-b",
    );
    let config = write_config(&hsm, "pin", [a, b], &pin_line(&hsm));
    new_root(&config, a);
    new_root(&config, b);
    let avail = "pkcs11:token=sealpost;object=pin-availability";
    new_root(&config, avail);
    let all_token = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keys/availability.key", avail)
        .replace(&pin_line(&hsm), "pin_env = \"SEALPOST_TEST_PIN\"");
    std::fs::write(&config, all_token).unwrap();
    for args in [
        vec!["check-config", "--config", config.to_str().unwrap()],
        vec!["serve", "--config", config.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
            .args(&args)
            .env("SEALPOST_TEST_PIN", "987654")
            .output()
            .unwrap();
        let all = text(&out);
        assert!(
            !out.status.success(),
            "{args:?} accepted a wrong PIN: {all}"
        );
        assert!(!all.contains("panicked"), "{all}");
        assert!(all.contains("encryption_policy[0]"), "{all}");
        assert!(all.contains("no key of policy p1 is usable"), "{all}");
        assert!(
            all.contains("token \"sealpost\"") && all.contains("PIN was refused"),
            "{all}"
        );
        assert!(!all.contains("987654"), "the PIN was printed: {all}");
    }
    // A token key without a [pkcs11] section is refused by name.
    let text_now = std::fs::read_to_string(&config).unwrap();
    let cut = text_now.find("[pkcs11]").unwrap();
    std::fs::write(&config, &text_now[..cut]).unwrap();
    let out = sealpost(&["check-config", "--config", config.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("encryption_policy[0].root_keys[0]") && text(&out).contains("[pkcs11]"),
        "{}",
        text(&out)
    );
}

/// The numbers of a `bench keys` line that starts with `name` and has `columns` numbers.
fn rates(out: &str, header: &str, name: &str, columns: usize) -> Vec<f64> {
    let table = out
        .split(header)
        .nth(1)
        .unwrap_or_else(|| panic!("no table {header:?}: {out}"));
    let line = table
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line under {header:?}: {out}"));
    let numbers: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(columns)
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{line}")))
        .collect();
    assert_eq!(numbers.len(), columns, "{line}");
    numbers
}

#[test]
fn bench_keys_measures_store_roots_in_a_file_and_in_a_token() {
    if softhsm().is_none() {
        return;
    }
    let out = sealpost(
        &[
            "bench",
            "keys",
            "--operations",
            "40",
            "--threads",
            "1",
            "--messages",
            "20",
        ],
        &[],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for name in ["file", "token"] {
        let unwraps = rates(&all, "policy unwraps/s", name, 2);
        assert!(unwraps.iter().all(|r| *r > 0.0), "{all}");
        let store = rates(&all, "write msg/s", name, 3);
        assert_eq!(store[0], 20.0, "{all}");
        assert!(store[1] > 0.0 && store[2] > 0.0, "{all}");
    }
}

#[test]
fn store_root_rotate_moves_a_file_root_into_the_token() {
    let Some(hsm) = softhsm() else { return };
    let dir = hsm.dir().join("rotate");
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    sealpost::crypto::keyfile::generate_key_file(&dir.join("keys/file-b.key")).unwrap();
    let config = write_config(
        &hsm,
        "rotate",
        ["keys/file-root.key", "keys/file-b.key"],
        &pin_line(&hsm),
    );
    let msg = message("rotated", 800);
    let id = open(&config).deliver(ALICE, &msg).unwrap();
    let token_root = "pkcs11:token=sealpost;object=rotated-root";
    new_root(&config, token_root);
    let out = sealpost(
        &[
            "store",
            "root",
            "rotate",
            "p1",
            "--config",
            config.to_str().unwrap(),
            "--old",
            dir.join("keys/file-root.key").to_str().unwrap(),
            "--new",
            token_root,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(token_root), "{}", text(&out));
    // The config names the token key; the old file is destroyed and the other root hidden: the
    // message opens through the token.
    let moved = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keys/file-root.key", token_root);
    std::fs::write(&config, moved).unwrap();
    std::fs::remove_file(dir.join("keys/file-root.key")).unwrap();
    let cfg = Config::load(&config, None).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(dir.join("keys/file-b.key"), dir.join("keys/file-b.hidden")).unwrap();
    let store = EncryptedStore::open(&cfg, "test").unwrap();
    assert_eq!(store.read(ALICE, &id).unwrap(), msg);
    let audit = std::fs::read_to_string(store.audit_path().expect("the audit log file")).unwrap();
    assert!(audit.contains("\"event\":\"root-rotate\""), "{audit}");
    let line = audit.lines().last().unwrap();
    assert!(
        line.contains(&format!("\"key\":\"root {token_root}")),
        "{line}"
    );
}
