//! Test domains: config files in temp dirs, servers in-process or as the real binary, sending
//! over real SMTP, and waiting for mailboxes.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealpost::config::Config;
use sealpost::smtp::client::{ClientSettings, Connection, RcptResult, TlsMode};
use sealpost::store::{EncryptedStore, MailStore};
use sealpost::tls::policy::TlsPolicy;

/// The fixture PKI (CA and the two mx certificates).
pub fn pki() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

/// A loopback port nobody listens on right now, taken below the kernel's ephemeral range
/// (32768 and up), so outbound connections of other tests cannot grab it before the server binds
/// it. Each test process walks its own stretch of ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left");
        let port = (BASE + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One test domain's configuration.
pub struct DomainSpec {
    /// "contoso" → domain contoso.test, host mx.contoso.test (certificate from the fixture PKI).
    pub name: &'static str,
    pub mailboxes: Vec<&'static str>,
    pub port: u16,
    /// (domain, port on 127.0.0.1)
    pub routes: Vec<(&'static str, u16)>,
    /// false (default): `[sender_auth] verify = false` is written, unless the extra TOML has a
    /// `[sender_auth]` table of its own: the test domains have no DNS, and a test about
    /// something else should not wait for one. true: nothing is written, the server's defaults
    /// (checks on) apply.
    pub check_senders: bool,
    pub relay_loopback: bool,
    pub tls: bool,
    pub nameservers: Vec<SocketAddr>,
    pub smtp_port: Option<u16>,
    /// Extra local domains (for MX tests).
    pub extra_domains: Vec<&'static str>,
    /// TOML appended to the file (connectors, ...). `{pki}` stands for the fixture PKI folder.
    pub extra_toml: String,
    /// `[queue] lifetime` and `delay_warning` (defaults apply when None).
    pub lifetime: Option<&'static str>,
    pub delay_warning: Option<&'static str>,
    /// Store mailboxes under a policy `<name>-default` with fresh keys in `<dir>/<name>-keys/`
    /// (default), or explicitly in clear (`encryption_policy = "none"`).
    pub encrypted: bool,
}

impl DomainSpec {
    pub fn new(name: &'static str, mailboxes: &[&'static str], port: u16) -> Self {
        DomainSpec {
            name,
            mailboxes: mailboxes.to_vec(),
            port,
            routes: Vec::new(),
            check_senders: false,
            relay_loopback: true,
            tls: true,
            nameservers: Vec::new(),
            smtp_port: None,
            extra_domains: Vec::new(),
            extra_toml: String::new(),
            lifetime: None,
            delay_warning: None,
            encrypted: true,
        }
    }

    /// Appends raw TOML; `{pki}` is replaced by the fixture PKI folder.
    pub fn toml(mut self, text: &str) -> Self {
        self.extra_toml
            .push_str(&text.replace("{pki}", &pki().display().to_string()));
        self.extra_toml.push('\n');
        self
    }

    pub fn route(mut self, domain: &'static str, port: u16) -> Self {
        self.routes.push((domain, port));
        self
    }

    /// Writes `<dir>/<name>.toml` (data in `<dir>/<name>-data`) and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let pki = pki();
        let host = format!("mx.{}.test", self.name);
        let mut t = format!(
            "[server]\nhostname = \"{host}\"\ndata_dir = \"{}\"\nrelay_networks = [{}]\n\n[[listener]]\naddress = \"127.0.0.1:{}\"\n\n",
            dir.join(format!("{}-data", self.name)).display(),
            if self.relay_loopback { "\"127.0.0.0/8\"" } else { "" },
            self.port
        );
        if self.tls {
            t.push_str(&format!(
                "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n",
                pki.join(format!("{host}.crt")).display(),
                pki.join(format!("{host}.key")).display()
            ));
        }
        let ns: Vec<String> = self
            .nameservers
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        t.push_str(&format!(
            "[dns]\nnameservers = [{}]\n[dns.static_routes]\n",
            ns.join(", ")
        ));
        for (domain, port) in &self.routes {
            t.push_str(&format!("\"{domain}\" = \"127.0.0.1:{port}\"\n"));
        }
        let policy = if self.encrypted {
            let keys = dir.join(format!("{}-keys", self.name));
            std::fs::create_dir_all(&keys).expect("key dir");
            let mut files = Vec::new();
            for k in ["a", "b", "availability"] {
                let f = keys.join(format!("{k}.key"));
                if !f.exists() {
                    sealpost::crypto::keyfile::generate_key_file(&f).expect("root key");
                }
                files.push(f.display().to_string());
            }
            t.push_str(&format!(
                "\n[[encryption_policy]]\nname = \"{}-default\"\nroot_keys = [\"{}\", \"{}\"]\navailability_key = \"{}\"\n",
                self.name, files[0], files[1], files[2]
            ));
            format!("{}-default", self.name)
        } else {
            "none".to_string()
        };
        t.push_str(&format!(
            "\n[[domain]]\nname = \"{}.test\"\nencryption_policy = \"{policy}\"\n",
            self.name
        ));
        for d in &self.extra_domains {
            t.push_str(&format!(
                "[[domain]]\nname = \"{d}\"\nencryption_policy = \"{policy}\"\n"
            ));
        }
        for m in &self.mailboxes {
            t.push_str(&format!("[[mailbox]]\naddress = \"{m}\"\n"));
        }
        if !self.check_senders && !self.extra_toml.contains("[sender_auth]") {
            t.push_str("\n[sender_auth]\nverify = false\n");
        }
        t.push_str("\n[queue]\nretry_initial = \"1s\"\nretry_max = \"2s\"\n");
        if let Some(l) = self.lifetime {
            t.push_str(&format!("lifetime = \"{l}\"\n"));
        }
        if let Some(d) = self.delay_warning {
            t.push_str(&format!("delay_warning = \"{d}\"\n"));
        }
        t.push_str("\n[delivery]\ntimeout = \"5s\"\n");
        if let Some(p) = self.smtp_port {
            t.push_str(&format!("smtp_port = {p}\n"));
        }
        t.push('\n');
        t.push_str(&self.extra_toml);
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, t).expect("write config");
        path
    }
}

pub fn load(path: &Path) -> Config {
    Config::load(path, None).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends one message over SMTP with opportunistic STARTTLS; returns per-recipient replies and
/// the TLS version used ("none" without TLS).
pub async fn send(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    data: &[u8],
) -> (Vec<RcptResult>, String) {
    let settings = ClientSettings {
        helo_name: "client.test".into(),
        timeout: Duration::from_secs(10),
        tls: sealpost::tls::opportunistic_client_config(),
    };
    let mut conn = Connection::open(addr, "mx.test", &settings, TlsMode::Opportunistic)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    let policy = TlsPolicy::opportunistic(settings.tls.clone());
    conn.authorize(&policy).expect("permit");
    let replies = conn
        .send(&policy, from, &to, data)
        .await
        .expect("SMTP transaction");
    let tls = conn
        .tls()
        .map(|t| t.version.clone())
        .unwrap_or_else(|| "none".into());
    conn.quit().await;
    (replies, tls)
}

/// A simple message with a unique marker in the subject and body.
pub fn message(from: &str, to: &str, marker: &str) -> Vec<u8> {
    format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: test {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\nbody {marker}\r\n.leading dot\r\n")
        .into_bytes()
}

/// The store of a domain written by `DomainSpec::write`: `<dir>/<name>-data` belongs to
/// `<dir>/<name>.toml`.
pub fn open_store(data_dir: &Path, actor: &str) -> EncryptedStore {
    let name = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix("-data"))
        .expect("a DomainSpec data dir");
    let config = data_dir.with_file_name(format!("{name}.toml"));
    let config = Config::load(&config, Some(data_dir)).unwrap_or_else(|e| panic!("{e}"));
    EncryptedStore::open(&config, actor).unwrap_or_else(|e| panic!("open store: {e}"))
}

/// Waits until `mailbox` under `data_dir` (of a `DomainSpec` domain) holds at least `n`
/// messages; returns them all.
pub fn wait_for_mailbox(
    data_dir: &Path,
    mailbox: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let store = open_store(data_dir, "test");
    let deadline = Instant::now() + timeout;
    loop {
        let list = store.list(mailbox).expect("mailbox list");
        if list.len() >= n {
            return list
                .iter()
                .map(|m| store.read(mailbox, &m.id).expect("read"))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{mailbox}: {} of {n} message(s) after {timeout:?}",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async-friendly version of `wait_for_mailbox`.
pub async fn wait_for_mailbox_async(
    data_dir: &Path,
    mailbox: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let (d, m) = (data_dir.to_path_buf(), mailbox.to_string());
    tokio::task::spawn_blocking(move || wait_for_mailbox(&d, &m, n, timeout))
        .await
        .expect("wait task")
}

/// `sealpost queue list --json --config CONFIG`: the JSON lines, the command having succeeded.
pub fn queue_list_json(config: &Path) -> String {
    let (code, out, err) = sealpost(&[
        "queue",
        "list",
        "--json",
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(code, 0, "queue list: {err}");
    out
}

/// Runs the real `sealpost` binary with arguments; returns (exit code, stdout, stderr).
pub fn sealpost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(args)
        .output()
        .expect("run sealpost");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sealpost serve` as a child process, killed (SIGKILL) when dropped.
pub struct ServeProcess {
    pub child: Child,
}

impl ServeProcess {
    /// Starts the server and waits until its port accepts connections.
    pub fn start(config: &Path, port: u16) -> ServeProcess {
        let log = config.with_extension(format!("{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sealpost"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log);
        Self::spawn(command, port)
    }

    /// Spawns a prepared `sealpost serve` command and waits until `port` accepts connections.
    pub fn spawn(mut command: Command, port: u16) -> ServeProcess {
        let child = command.spawn().expect("spawn sealpost serve");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sealpost serve did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ServeProcess { child }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir` (recursively) whose bytes contain `needle`: `grep -rl` in Rust.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

/// A self-signed certificate and key made by `openssl req` (e.g. `"rsa:1024"`, or extra args
/// like `-sha1`): `<dir>/<stem>.key` and `<dir>/<stem>.crt`.
pub fn openssl_self_signed(
    dir: &Path,
    stem: &str,
    newkey: &str,
    extra: &[&str],
) -> (PathBuf, PathBuf) {
    let (key, crt) = (
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.crt")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            newkey,
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=mx.contoso.test",
        ])
        .args(extra)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, crt)
}

/// contoso (alice, carol) and fabrikam (bob, dave) running in-process, each routing the other's
/// domain to it, with extra TOML for each.
pub struct Pair {
    pub contoso: sealpost::app::Server,
    pub fabrikam: sealpost::app::Server,
    pub contoso_data: PathBuf,
    pub fabrikam_data: PathBuf,
    pub contoso_config: PathBuf,
    pub fabrikam_config: PathBuf,
}

pub async fn start_pair(dir: &Path, contoso_toml: &str, fabrikam_toml: &str) -> Pair {
    let (cport, fport) = (free_port(), free_port());
    let contoso = DomainSpec::new(
        "contoso",
        &["alice@contoso.test", "carol@contoso.test"],
        cport,
    )
    .route("fabrikam.test", fport)
    .toml(contoso_toml);
    let fabrikam = DomainSpec::new(
        "fabrikam",
        &["bob@fabrikam.test", "dave@fabrikam.test"],
        fport,
    )
    .route("contoso.test", cport)
    .toml(fabrikam_toml);
    start_specs(dir, contoso, fabrikam).await
}

/// Writes both domains' configurations into `dir` and starts them in-process, fabrikam first.
pub async fn start_specs(dir: &Path, contoso: DomainSpec, fabrikam: DomainSpec) -> Pair {
    let (contoso_config, fabrikam_config) = (contoso.write(dir), fabrikam.write(dir));
    let (c, f) = (load(&contoso_config), load(&fabrikam_config));
    let (contoso_data, fabrikam_data) = (c.data_dir.clone(), f.data_dir.clone());
    let fabrikam = sealpost::app::start(f).await.expect("start fabrikam");
    let contoso = sealpost::app::start(c).await.expect("start contoso");
    Pair {
        contoso,
        fabrikam,
        contoso_data,
        fabrikam_data,
        contoso_config,
        fabrikam_config,
    }
}

impl Pair {
    pub async fn shutdown(self) {
        self.contoso.shutdown().await;
        self.fabrikam.shutdown().await;
    }
}

/// Waits until some queued recipient's last reply contains `needle` (20 s at most).
pub async fn wait_for_reason(server: &sealpost::app::Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reasons: Vec<String> = server
            .spool()
            .list()
            .expect("queue list")
            .iter()
            .flat_map(|e| {
                e.envelope
                    .recipients
                    .iter()
                    .filter_map(|r| r.last_reply.clone())
            })
            .collect();
        if let Some(r) = reasons.iter().find(|r| r.contains(needle)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no reason containing {needle:?}; have {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a `message` with `marker` from alice@contoso.test to `to` and asserts the 250.
pub async fn submit(server: &sealpost::app::Server, to: &str, marker: &str) {
    let (replies, _) = send(
        server.local_addrs()[0],
        "alice@contoso.test",
        &[to],
        &message("alice@contoso.test", to, marker),
    )
    .await;
    assert_eq!(replies[0].as_ref().map(|r| r.code), Ok(250), "{replies:?}");
}

/// Runs a Python 3 script (`python3 -c`), asserts it succeeded and returns its standard output.
pub fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends `marker`'s message from alice to `to` through `server` with Python's smtplib after
/// STARTTLS, `header` lines in front of it and `options` on MAIL FROM; returns what Python
/// printed (`refused: {...}`, the recipients refused).
pub async fn python_send(
    server: &sealpost::app::Server,
    to: &str,
    marker: &str,
    header: &str,
    options: &[&str],
) -> String {
    let port = server.local_addrs()[0].port();
    let msg = format!(
        "{header}{}",
        String::from_utf8(message("alice@contoso.test", to, marker)).unwrap()
    );
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", {port}, local_hostname="client.test", timeout=10)
s.starttls(context=ctx)
print("refused:", s.sendmail("alice@contoso.test", [{to:?}], {msg:?}.encode(), mail_options={options:?}))
s.quit()
"#
    );
    tokio::task::spawn_blocking(move || python(&script))
        .await
        .unwrap()
}

/// The Argon2id hash `sealpost keys hash-password` makes of `password`, for `[[user]]` entries.
pub fn hash(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sealpost"))
        .args(["keys", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
