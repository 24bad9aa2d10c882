//! Folders created, deleted and renamed by one IMAP session reach another session in IDLE on the
//! same mailbox: a folder created, renamed or deleted elsewhere sends it nothing (IMAP has no
//! untagged response for that) and leaves it idling; its own selected folder deleted or renamed
//! by another session ends it with `* BYE` within 2 s (RFC 2180 §3.1). The same across two nodes
//! sharing their store in PostgreSQL. A session renaming its own selected folder keeps it.

use crate::pg_mailbox::node;
use crate::support;

use serde_json::Value;
use support::imap::{json, Imap, ALICE};
use support::postgres::Cluster;

/// The Python script: session B (on port `pb`) changes folders while session A (on port `pa`)
/// is in IDLE; prints what A heard as JSON. With `warm_up`, B first appends to INBOX until A,
/// in IDLE on INBOX, hears of it (the other node listens for changes by then).
fn script(pa: u16, pb: u16, password: &str, warm_up: bool) -> String {
    format!(
        r#"
import imaplib, ssl, json, time, select
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
def login(port):
    M = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
    M.login("{ALICE}", "{password}")
    return M
def ok(r):
    assert r[0] == "OK", r
    return r
def idle(folder):
    A = login({pa})
    ok(A.select(folder))
    tag = A._new_tag()
    A.send(tag + b" IDLE\r\n")
    line = A.readline()
    assert line.startswith(b"+"), line
    return A, tag
def heard(A, since, seconds):
    # The first line A receives within `seconds` of `since`, and when; [None, None] if none.
    left = since + seconds - time.monotonic()
    if A.sock.pending() == 0 and not select.select([A.sock], [], [], max(left, 0))[0]:
        return [None, None]
    line = A.readline().decode().strip()
    return [round(time.monotonic() - since, 3), line]
def rest(A):
    try:
        return A.readline().decode()
    except Exception as e:
        return "error: %s" % e
B = login({pb})
out = {{}}
if {warm_up}:
    A, tag = idle("INBOX")
    line = None
    for i in range(60):
        ok(B.append("INBOX", None, None, b"Subject: warm up\r\n\r\nwarm up\r\n"))
        line = heard(A, time.monotonic(), 1.0)[1]
        if line:
            break
    out["warm_up"] = line
    A.send(b"DONE\r\n")
    while not A.readline().startswith(tag):
        pass
    A.logout()
for f in ["Watched", "Doomed"]:
    ok(B.create(f))
A, tag = idle("Watched")
t = time.monotonic(); ok(B.create("Fresh"))
out["create"] = heard(A, t, 1.0)
t = time.monotonic(); ok(B.rename("Fresh", "Fresh2"))
out["rename_other"] = heard(A, t, 1.0)
t = time.monotonic(); ok(B.delete("Fresh2"))
out["delete_other"] = heard(A, t, 1.0)
t = time.monotonic(); ok(B.rename("Watched", "Moved"))
out["rename_selected"] = heard(A, t, 10.0)
out["after_rename_selected"] = rest(A)
A, tag = idle("Doomed")
t = time.monotonic(); ok(B.delete("Doomed"))
out["delete_selected"] = heard(A, t, 10.0)
out["after_delete_selected"] = rest(A)
ok(B.select("Moved"))
ok(B.rename("Moved", "Mine"))
out["own_rename_noop"] = B.noop()[0]
out["own_rename_status"] = B.status("Mine", "(MESSAGES)")[0]
B.logout()
print(json.dumps(out))
"#,
        warm_up = if warm_up { "True" } else { "False" },
    )
}

/// What a session in IDLE heard: nothing for other folders, BYE within 2 s for its own.
fn check(out: &Value) {
    for step in ["create", "rename_other", "delete_other"] {
        assert_eq!(
            out[step],
            serde_json::json!([null, null]),
            "{step} of another folder sent the idling session something: {out}"
        );
    }
    for step in ["rename_selected", "delete_selected"] {
        let took = out[step][0]
            .as_f64()
            .unwrap_or_else(|| panic!("{step}: the idling session heard nothing: {out}"));
        let line = out[step][1].as_str().unwrap_or_default();
        assert!(line.starts_with("* BYE "), "{step}: {line:?}");
        assert!(line.contains("deleted or renamed"), "{step}: {line:?}");
        assert!(took < 2.0, "{step}: BYE after {took} s");
        eprintln!("{step}: the idling session heard {line:?} after {took} s");
        assert_eq!(
            out[format!("after_{step}")],
            "",
            "{step}: the connection stays open after BYE: {out}"
        );
    }
    assert_eq!(out["own_rename_noop"], "OK", "{out}");
    assert_eq!(out["own_rename_status"], "OK", "{out}");
}

#[test]
fn idle_hears_folders_deleted_and_renamed_by_another_session() {
    let imap = Imap::start();
    let out = json(&imap.python(&script(imap.imaps, imap.imaps, "alice-pw", false)));
    check(&out);
}

#[test]
fn idle_on_one_node_hears_its_folder_deleted_on_another_node() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let database = cluster.create_database();
    let a = node(&cluster, dir.path(), &database, "a", None);
    let b = node(&cluster, dir.path(), &database, "b", Some(&a));
    let _server_a = a.start();
    let _server_b = b.start();
    let out = json(&support::domains::python(&script(
        a.imaps, b.imaps, "alice-pw", true,
    )));
    assert!(
        out["warm_up"]
            .as_str()
            .is_some_and(|l| l.ends_with("EXISTS")),
        "{out}"
    );
    check(&out);
}
