//! A running `sealpost serve` with SMTP, imap (STARTTLS) and imaps listeners and two users, for
//! tests that drive it with real IMAP clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::admin::{serve_log, wait_listening};
use super::domains::{files_containing, free_port, hash, python, DomainSpec, ServeProcess};

pub const ALICE: &str = "alice@contoso.test";
pub const BOB: &str = "bob@contoso.test";

/// A running server with SMTP, imap (STARTTLS) and imaps listeners; users alice and bob.
pub struct Imap {
    pub dir: tempfile::TempDir,
    pub server: ServeProcess,
    pub config: PathBuf,
    pub data: PathBuf,
    pub smtp: u16,
    pub imap: u16,
    pub imaps: u16,
    pub admin: std::net::SocketAddr,
}

impl Imap {
    pub fn start() -> Imap {
        let dir = tempfile::tempdir().unwrap();
        let (smtp, imap, imaps, admin) = (free_port(), free_port(), free_port(), free_port());
        let toml = format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [[listener]]\naddress = \"127.0.0.1:{imap}\"\nprotocol = \"imap\"\n\
             [[listener]]\naddress = \"127.0.0.1:{imaps}\"\nprotocol = \"imaps\"\n\
             [[user]]\nname = \"{ALICE}\"\npassword_hash = \"{}\"\n\
             [[user]]\nname = \"{BOB}\"\npassword_hash = \"{}\"\n",
            hash("alice-pw"),
            hash("bob-pw")
        );
        let spec = DomainSpec::new("contoso", &[ALICE, BOB], smtp).toml(&toml);
        let config = spec.write(dir.path());
        let server = ServeProcess::start(&config, smtp);
        for port in [imap, imaps, admin] {
            wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(10));
        }
        Imap {
            data: dir.path().join("contoso-data"),
            dir,
            server,
            config,
            smtp,
            imap,
            imaps,
            admin: ([127, 0, 0, 1], admin).into(),
        }
    }

    /// Runs a Python script with `PRELUDE` (imaplib, an unverified TLS context `ctx`, `send`,
    /// ports) in front; returns what it printed.
    pub fn python(&self, body: &str) -> String {
        let prelude = format!(
            r#"
import imaplib, smtplib, ssl, json, time, socket
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
SMTP, IMAP, IMAPS = {}, {}, {}
def send(to, subject, body):
    s = smtplib.SMTP("127.0.0.1", SMTP, local_hostname="client.test", timeout=10)
    msg = "From: Carol Sender <carol@fabrikam.test>\r\nTo: %s\r\nSubject: %s\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <%s@fabrikam.test>\r\n\r\n%s\r\n" % (to, subject, subject, body)
    s.sendmail("carol@fabrikam.test", [to], msg.encode())
    s.quit()
def inbox_count(user, pw):
    M = imaplib.IMAP4_SSL("127.0.0.1", IMAPS, ssl_context=ctx)
    M.login(user, pw)
    n = int(M.select("INBOX")[1][0])
    M.logout()
    return n
def wait_for(user, pw, n):
    for _ in range(200):
        if inbox_count(user, pw) >= n:
            return
        time.sleep(0.05)
    raise Exception("mail did not arrive")
"#,
            self.smtp, self.imap, self.imaps
        );
        python(&format!("{prelude}\n{body}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(serve_log(&self.config)).unwrap_or_default()
    }
}

pub fn json(out: &str) -> serde_json::Value {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
}

pub fn in_clear(data: &Path, marker: &str) -> Vec<PathBuf> {
    files_containing(data, marker.as_bytes())
}
