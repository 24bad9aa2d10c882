//! After a crowd of idle SMTP sessions closes, `serve` hands the memory they used back to the
//! system within seconds (finished sessions are reaped at once, then the housekeeping releases
//! the freed pages of glibc's arenas), and says so in its debug log.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::domains::{free_port, DomainSpec, ServeProcess};

const SESSIONS: usize = 3000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Makes room for SESSIONS sockets here and in the server (which inherits the limit).
fn enough_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by reference.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let want = (SESSIONS as libc::rlim_t + 500).min(limit.rlim_max);
        if limit.rlim_cur < want {
            limit.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= SESSIONS as libc::rlim_t + 100,
        "the open-files limit ({}) is too low for {SESSIONS} sessions",
        limit.rlim_cur
    );
}

/// Connects, reads the greeting and says EHLO.
fn idle_session(i: usize, port: u16) -> BufReader<TcpStream> {
    let mut reader = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "session {i}: {line:?}");
    reader.get_mut().write_all(b"EHLO idle.test\r\n").unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("250"), "session {i}: {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            return reader;
        }
    }
}

#[test]
fn memory_of_closed_idle_sessions_goes_back_to_the_system() {
    if !cfg!(target_env = "gnu") {
        eprintln!("skipping: not a glibc build (the release goes through glibc's malloc_trim)");
        return;
    }
    enough_files();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let limits = format!(
        "[limits]\nmax_connections = {n}\nmax_connections_per_ip = {n}\ncommand_timeout = \"30m\"\n",
        n = SESSIONS + 100
    );
    let config = DomainSpec::new("contoso", &["alice@contoso.test"], port)
        .toml(&limits)
        .write(dir.path());
    let log = dir.path().join("serve.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,sealpost::memory=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let server = ServeProcess::spawn(command, port);
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(1500));
    let before = rss_kib(pid);

    let sessions: Vec<_> = (0..SESSIONS).map(|i| idle_session(i, port)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid);
    let grown = idle.saturating_sub(before);
    assert!(
        grown > 4 * 1024,
        "{SESSIONS} idle sessions should cost some MiB: {before} KiB before, {idle} KiB with them"
    );
    drop(sessions);

    // Back within half of what the sessions took, within 12 s (the housekeeping looks every 2 s
    // and waits for the count of sessions to settle). Without the release the RSS stays where
    // it was with the sessions open; with it, it comes back to within about 1 MiB of before.
    let deadline = Instant::now() + Duration::from_secs(12);
    let bound = before + grown / 2;
    let mut now = rss_kib(pid);
    while now > bound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        now = rss_kib(pid);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        now <= bound,
        "RSS {before} KiB before, {idle} KiB with {SESSIONS} idle sessions, still {now} KiB 12 s \
         after they closed (bound {bound} KiB)\n{text}"
    );
    // The line is written once the release returned, a moment after the RSS fell.
    let logged = |t: &str| t.contains("freed memory handed back to the system");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = text;
    while !logged(&text) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        text = std::fs::read_to_string(&log).unwrap();
    }
    assert!(logged(&text), "no debug line about the release:\n{text}");
}
