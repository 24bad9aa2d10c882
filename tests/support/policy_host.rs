//! An MTA-STS policy host (RFC 8461 §3.3): Python's `http.server` + `ssl` serving a policy on
//! 127.0.0.N:443 with a certificate for `mta-sts.<domain>` from a CA made here.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A policy host on `ip`:443 for `mta-sts.<domain>`; killed when dropped.
pub struct PolicyHost {
    child: Child,
    dir: PathBuf,
}

impl PolicyHost {
    pub fn start(dir: &Path, ip: Ipv4Addr, domain: &str, body: &[u8]) -> PolicyHost {
        let dir = dir.join(format!("policy-{ip}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (crt, key) = policy_certificate(&dir, &format!("mta-sts.{domain}"));
        let host = PolicyHost {
            child: Command::new("python3")
                .arg("-c")
                .arg(include_str!("../mta_sts/policy_host.py"))
                .arg(ip.to_string())
                .arg(&crt)
                .arg(&key)
                .arg(&dir)
                .stdout(Stdio::piped())
                .spawn()
                .expect("run python3"),
            dir,
        };
        host.answer(200, "text/plain; charset=utf-8", body);
        host
    }

    pub fn ready(mut self) -> PolicyHost {
        let out = self.child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "policy host did not start");
        self
    }

    pub fn answer(&self, status: u16, content_type: &str, body: &[u8]) {
        std::fs::write(self.dir.join("status"), status.to_string()).unwrap();
        std::fs::write(self.dir.join("ctype"), content_type).unwrap();
        std::fs::write(self.dir.join("body"), body).unwrap();
    }

    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.join("log"))
            .map(|l| l.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for PolicyHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate for `name` from a CA made here; the CA goes into `<dir>/../bundle.crt` beside
/// the fixture CA (which issued the MX certificates), the file `mta_sts_ca_file` names.
pub fn policy_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "policy host test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let fixture_ca = std::fs::read_to_string(super::domains::pki().join("ca.crt")).unwrap();
    let bundle = dir.parent().unwrap().join("bundle.crt");
    std::fs::write(&bundle, format!("{fixture_ca}\n{}", ca.pem())).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let (crt, k) = (dir.join("policy.crt"), dir.join("policy.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (crt, k)
}
