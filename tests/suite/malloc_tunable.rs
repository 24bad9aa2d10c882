//! `serve` runs with glibc's mmap threshold fixed (it starts itself again once with
//! `GLIBC_TUNABLES` set, keeping its process id), and an administrator's own setting of that
//! tunable is left as it is.

use crate::support;

use std::process::Command;

use support::domains::{free_port, DomainSpec, ServeProcess};

fn environment(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

fn tunables(env: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix("GLIBC_TUNABLES="))
        .map(str::to_string)
}

#[test]
fn serve_fixes_the_mmap_threshold_and_keeps_an_administrators_value() {
    if !cfg!(target_env = "gnu") {
        eprintln!("skipping: not a glibc build");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = DomainSpec::new("contoso", &["alice@contoso.test"], port).write(dir.path());

    let server = ServeProcess::start(&config, port);
    let env = environment(server.child.id());
    assert_eq!(
        tunables(&env).as_deref(),
        Some("glibc.malloc.mmap_threshold=131072"),
        "{env}"
    );
    drop(server);

    let port = free_port();
    let config = DomainSpec::new("fabrikam", &["bob@fabrikam.test"], port).write(dir.path());
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536");
    let server = ServeProcess::spawn(command, port);
    let env = environment(server.child.id());
    assert_eq!(
        tunables(&env).as_deref(),
        Some("glibc.malloc.mmap_threshold=65536"),
        "{env}"
    );
}
