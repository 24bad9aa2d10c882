//! Every command that prints a listing or a message ends quietly when the reader of its standard
//! output is gone (`sealpost ... | head`): exit status 141, as after SIGPIPE, and no panic.

use crate::support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use sealpost::store::MailStore;
use support::domains::{
    free_port, message, open_store, send, wait_for_mailbox, DomainSpec, ServeProcess,
};

/// A pipe whose reading end is already closed: every write to the other end fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills two new descriptors, each owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors from `pipe`, not owned elsewhere.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// Runs the binary with its standard output on a closed pipe; returns (status, stderr).
fn into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .stdout(Stdio::from(closed_pipe()))
        .output()
        .expect("run sealpost");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn listing_commands_end_quietly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Mail for alice is stored; mail for the dead route stays queued: every listing has content.
    let spec =
        DomainSpec::new("contoso", &["alice@contoso.test"], port).route("dead.test", free_port());
    let config = spec.write(dir.path());
    let data = dir.path().join("contoso-data");
    let server = ServeProcess::start(&config, port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for to in ["alice@contoso.test", "x@dead.test"] {
        let (replies, _) = rt.block_on(send(
            ([127, 0, 0, 1], port).into(),
            "alice@contoso.test",
            &[to],
            &message("alice@contoso.test", to, "M-pipe"),
        ));
        assert!(replies[0].is_ok(), "{replies:?}");
    }
    wait_for_mailbox(&data, "alice@contoso.test", 1, Duration::from_secs(20));
    drop(server);
    let id = open_store(&data, "test")
        .list("alice@contoso.test")
        .unwrap()[0]
        .id
        .clone();
    let c = config.to_str().unwrap();

    let commands: Vec<Vec<&str>> = vec![
        vec!["completions", "zsh"],
        vec!["completions", "bash"],
        vec!["queue", "list", "--config", c],
        vec![
            "mailbox",
            "list",
            "--config",
            c,
            "--mailbox",
            "alice@contoso.test",
        ],
        vec![
            "mailbox",
            "read",
            "--config",
            c,
            "--mailbox",
            "alice@contoso.test",
            "--id",
            &id,
        ],
        vec!["trace", "--config", c],
        vec!["check-config", "--config", c],
    ];
    for args in commands {
        let (status, err) = into_closed_pipe(&args);
        assert_eq!(status, Some(141), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.is_empty(),
            "{args:?} says nothing on a closed pipe: {err}"
        );
    }
}
