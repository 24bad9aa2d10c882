//! A real PostgreSQL server for the tests: a temporary cluster (`initdb` as the unprivileged
//! user `postgres`, since initdb refuses root) on a free loopback port, its unix socket in the
//! temporary directory too. TCP logins need a password (SCRAM), which the tests hand to sealpost
//! through a 0600 password file.
//!
//! [`shared`] starts one cluster per test binary; [`Cluster::start`] one of a test's own (which
//! the test may stop and start again). Each is stopped when dropped, and in any case by a
//! watchdog shell that stops it once the test process is gone (statics are never dropped), so
//! no `postgres` process outlives the tests. Without the PostgreSQL binaries the tests say why
//! they skip; under `CI` they fail.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
const USER: &str = "postgres";
const SUPERUSER_PASSWORD: &str = "s3cret-for-tests-only";

pub struct Cluster {
    dir: PathBuf,
    /// Stops the server and removes `dir` once this process is gone; never waited for.
    _watchdog: Option<std::process::Child>,
    port: u16,
    databases: AtomicUsize,
}

/// The cluster shared by the tests of this binary, or `None` (after saying why) when PostgreSQL
/// is not installed.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start).as_ref()
}

/// Whether the binaries are here; when not, says why (and panics under `CI`).
pub fn available() -> bool {
    let found = ["initdb", "pg_ctl", "postgres", "psql"]
        .iter()
        .all(|b| Path::new(BIN).join(b).is_file());
    let runuser = Command::new("runuser").arg("--help").output().is_ok();
    if found && runuser {
        return true;
    }
    let why = format!(
        "PostgreSQL is not installed ({BIN}/initdb, pg_ctl, postgres, psql, or runuser missing): \
         apt-get install postgresql (.ci/run does)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping the PostgreSQL tests: {why}");
    false
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", USER, "--", &format!("{BIN}/{program}")]);
    cmd
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A new cluster of its own, started; `None` when PostgreSQL is not installed.
    pub fn start() -> Option<Cluster> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("sealpost-pg")
            .tempdir()
            .unwrap()
            .keep();
        run(
            {
                let mut c = Command::new("chown");
                c.arg(format!("{USER}:{USER}")).arg(&dir);
                c
            },
            "chown",
        );
        let pwfile = dir.join("superuser.pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        run(
            {
                let mut c = Command::new("chown");
                c.arg(format!("{USER}:{USER}")).arg(&pwfile);
                c
            },
            "chown",
        );
        let mut init = as_postgres("initdb");
        init.arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C"]);
        run(init, "initdb");
        let mut cluster = Cluster {
            dir,
            _watchdog: None,
            port: free_port(),
            databases: AtomicUsize::new(0),
        };
        cluster._watchdog = Some(cluster.watchdog());
        cluster.start_server();
        Some(cluster)
    }

    /// Stops the cluster's server once this process is gone, then removes its directory.
    fn watchdog(&self) -> std::process::Child {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             runuser -u {USER} -- {BIN}/pg_ctl -D '{data}' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The data directory (PGDATA).
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) {
        let mut ctl = as_postgres("pg_ctl");
        ctl.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
                 -c fsync=on -c synchronous_commit=on",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        run(ctl, "pg_ctl start");
    }

    /// Turns TLS on with a server certificate for 127.0.0.1 signed by `ca_crt` / `ca_key`, and
    /// allows TCP logins over TLS only (`hostssl`); restarts the server.
    pub fn require_tls(&self, ca_crt: &Path, ca_key: &Path) {
        let data = self.data();
        let (key, csr, crt) = (
            data.join("server.key"),
            self.dir.join("server.csr"),
            data.join("server.crt"),
        );
        let ext = self.dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let mut req = Command::new("openssl");
        req.args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr);
        run(req, "openssl req");
        let mut sign = Command::new("openssl");
        sign.args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(ca_crt)
            .arg("-CAkey")
            .arg(ca_key)
            .args(["-set_serial", "4242", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&crt);
        run(sign, "openssl x509 -req");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut chown = Command::new("chown");
        chown.arg(format!("{USER}:{USER}")).arg(&key).arg(&crt);
        run(chown, "chown");
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).unwrap();
        let hba = data.join("pg_hba.conf");
        let text: String = std::fs::read_to_string(&hba)
            .unwrap()
            .lines()
            .map(|l| match l.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&hba, text).unwrap();
        self.stop_server();
        self.start_server();
    }

    /// Stops the server (fast: open connections are closed).
    pub fn stop_server(&self) {
        let mut ctl = as_postgres("pg_ctl");
        ctl.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(ctl, "pg_ctl stop");
    }

    /// Runs SQL as the superuser over the unix socket; the output, unaligned, no headers.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut psql = as_postgres("psql");
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql]);
        run(psql, &format!("psql {sql}"))
    }

    /// `pg_dump` of a database (plain SQL; `bytea` values appear in hex).
    pub fn dump(&self, database: &str) -> Vec<u8> {
        let mut dump = as_postgres("pg_dump");
        dump.arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", database]);
        let out = dump.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A new, empty database; its name.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("sealpost_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The URL sealpost is given (no password: see [`Cluster::password_file`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Writes the password into `dir/pg.password` (mode 0600) and returns its path.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pg.password");
        std::fs::write(&path, format!("{SUPERUSER_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// The settings of a queue on `database` with the password from `password_file`.
    pub fn settings(&self, database: &str, password_file: &Path) -> sealpost::pg::PgSettings {
        sealpost::pg::PgSettings {
            url: self.url(database),
            password: sealpost::pg::PasswordSource::File(password_file.to_path_buf()),
            tls: sealpost::pg::PgTls::Disable,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            node_id: None,
        }
    }

    /// Every file under the data directory with its content (files that vanish while walking,
    /// as temporary files do, are skipped).
    pub fn files_at_rest(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        walk(&self.data(), &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut ctl = as_postgres("pg_ctl");
        ctl.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = ctl.status();
    }
}
