//! A Postfix instance of its own for the comparison: loopback only, a relay to the sink, the
//! same certificate as sealpost, its queue in the bench directory, chroot off. Postfix from the
//! distribution is installed when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

const POSTFIX: &str = "/usr/sbin/postfix";

/// Installs Debian's postfix when `/usr/sbin/postfix` is missing (the system instance is not
/// started by the installation on a machine without an init system, and not used).
pub fn ensure_installed() -> anyhow::Result<()> {
    if Path::new(POSTFIX).exists() {
        return Ok(());
    }
    eprintln!("postfix is missing: installing it with apt-get");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "postfix"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get")?;
    anyhow::ensure!(
        status.success() && Path::new(POSTFIX).exists(),
        "could not install postfix (apt-get install postfix failed)"
    );
    Ok(())
}

/// The Postfix version, e.g. "3.7.11".
pub fn version() -> String {
    Command::new("postconf")
        .args(["-h", "mail_version"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// How Postfix is set up.
pub struct Setup<'a> {
    pub dir: PathBuf,
    pub port: u16,
    pub sink_port: u16,
    /// STARTTLS on both hops with this certificate and key; None: plaintext.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Outbound TLS connection reuse and TLS session caches (Postfix's best setting).
    pub best: bool,
}

/// A running instance.
pub struct Postfix {
    config: PathBuf,
    pub master_pid: u32,
}

impl Postfix {
    pub fn start(s: &Setup) -> anyhow::Result<Postfix> {
        let etc = s.dir.join("etc");
        let (spool, data) = (s.dir.join("spool"), s.dir.join("data"));
        for d in [&etc, &spool, &data] {
            std::fs::create_dir_all(d)?;
        }
        let chown = Command::new("chown").arg("postfix").arg(&data).status()?;
        anyhow::ensure!(chown.success(), "chown postfix {}", data.display());
        let mut main = format!(
            "compatibility_level = 3.6\nqueue_directory = {}\ndata_directory = {}\n\
             mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = loopback-only\n\
             inet_protocols = ipv4\nmyhostname = mx.contoso.test\nmydestination =\n\
             mynetworks = 127.0.0.0/8\nrelayhost = [127.0.0.1]:{}\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             maillog_file = {}/maillog\nmaillog_file_prefixes = {}\n",
            spool.display(),
            data.display(),
            s.sink_port,
            s.dir.display(),
            s.dir.display()
        );
        if let Some((cert, key)) = s.tls {
            main.push_str(&format!(
                "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n\
                 smtpd_tls_security_level = may\nsmtp_tls_security_level = may\n",
                cert.display(),
                key.display()
            ));
            if s.best {
                main.push_str(
                    "smtp_tls_connection_reuse = yes\n\
                     smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache\n\
                     smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache\n",
                );
            }
        } else {
            main.push_str("smtpd_tls_security_level = none\nsmtp_tls_security_level = none\n");
        }
        std::fs::write(etc.join("main.cf"), main)?;
        let master =
            std::fs::read_to_string("/etc/postfix/master.cf").context("/etc/postfix/master.cf")?;
        std::fs::write(etc.join("master.cf"), master_cf(&master, s.port))?;
        let postfix = Postfix {
            config: etc,
            master_pid: 0,
        };
        postfix.command("start")?;
        let pid_file = spool.join("pid/master.pid");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return Ok(Postfix {
                    master_pid: pid,
                    ..postfix
                });
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "postfix did not start (see {})",
                s.dir.join("maillog").display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn command(&self, what: &str) -> anyhow::Result<()> {
        let out = Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config)
            .arg(what)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "postfix {what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Stops the instance and waits (up to 10 s) for its master process to be gone.
    pub fn stop(self) {
        if self.command("stop").is_err() {
            let _ = Command::new("kill")
                .arg(self.master_pid.to_string())
                .status();
        }
        let proc = PathBuf::from(format!("/proc/{}", self.master_pid));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while running(&proc) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Whether the process of this /proc directory exists and is not a zombie.
fn running(proc: &Path) -> bool {
    std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// The distribution's master.cf with chroot off everywhere, smtpd on 127.0.0.1:`port` instead
/// of port 25, and the tlsproxy service connection reuse needs.
fn master_cf(master: &str, port: u16) -> String {
    let mut out = String::new();
    for line in master.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let service = !line.starts_with(char::is_whitespace) && !line.starts_with('#');
        if service && fields.len() >= 8 {
            let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            if f[0] == "smtp" && f[1] == "inet" {
                f[0] = format!("127.0.0.1:{port}");
            }
            f[4] = "n".to_string();
            out.push_str(&f.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str("tlsproxy unix - - n - 0 tlsproxy\n");
    out
}
