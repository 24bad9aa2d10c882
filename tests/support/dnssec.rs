//! Real DNSSEC-signed zones for tests: NSD serving zones signed with ldns-signzone, on loopback.
//!
//! One NSD instance (authoritative for every zone it holds) serves:
//! - `dane.test.`, signed; its key is the trust anchor ([`SignedZones::anchor`]);
//! - `good.dane.test.`, signed, with its DS in the parent: `MX 10 mx`, `mx A 127.0.0.1`,
//!   `_25._tcp.mx TLSA 3 1 1 <TLSA_DATA>`; `nomx` A record (a secure name with no TLSA);
//!   aliases for RFC 7672 §2.2.2, each with a TLSA record of its own at `_25._tcp.<alias>`:
//!   `alias CNAME mx` (a secure chain), `alias-plain CNAME mx.plain.dane.test.` (addresses in
//!   an unsigned zone), `alias-bogus CNAME mx.bogus.dane.test.` (addresses bogus);
//!   `cname-only CNAME nomx`, with TLSA only at the alias (the expanded name has none);
//! - `plain.dane.test.`, unsigned, delegated without DS (insecure), with the same records;
//! - `bogus.dane.test.`, signed, but the DS in the parent is of another key (bogus).
//!
//! [`SignedZones::start_with`] adds records of the caller's to `good.dane.test.` (e.g. a TLSA
//! record for a certificate a test server presents, [`tlsa_for_certificate`]).
//!
//! ```ignore
//! let Some(zones) = SignedZones::start() else { return }; // NSD or ldnsutils missing
//! let resolver = Resolver::validating(&[zones.addr()], Some(zones.anchor()))?;
//! ```
#![allow(dead_code)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The association data of every TLSA record in the zones (32 bytes, as for SHA2-256).
pub const TLSA_DATA: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";

/// The association data of the TLSA records at the aliases (`_25._tcp.alias...`).
pub const ALIAS_TLSA_DATA: &str =
    "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";

const NSD: &str = "/usr/sbin/nsd";
const TOOLS: [&str; 3] = ["ldns-keygen", "ldns-signzone", "ldns-key2ds"];

/// A running NSD with the signed zones; stopped (and its files removed) on drop.
pub struct SignedZones {
    child: Child,
    addr: SocketAddr,
    anchor: PathBuf,
    dir: tempfile::TempDir,
}

impl SignedZones {
    /// Generate, sign and serve the zones; `None` (with the reason on stderr) when NSD or
    /// ldnsutils are not installed. Under CI (`CI` set, as `.ci/run` runs), which installs
    /// them, a missing tool fails the test instead: CI never skips.
    pub fn start() -> Option<SignedZones> {
        SignedZones::start_with("")
    }

    /// [`SignedZones::start`], with `good_records` (zone-file lines, names relative to
    /// `good.dane.test.`) added to the signed zone `good.dane.test.`.
    pub fn start_with(good_records: &str) -> Option<SignedZones> {
        if let Some(missing) = missing_tool() {
            let why = format!("{missing} is not installed (apt-get install nsd ldnsutils)");
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        let good = keygen(path, "good.dane.test");
        let bogus = keygen(path, "bogus.dane.test");
        let other = keygen(path, "bogus.dane.test");
        let parent = keygen(path, "dane.test");

        let records = format!(
            "mx A 127.0.0.1\n@ MX 10 mx\n_25._tcp.mx TLSA 3 1 1 {TLSA_DATA}\nnomx A 127.0.0.1\n"
        );
        let aliases: String = [
            ("alias", "mx"),
            ("alias-plain", "mx.plain.dane.test."),
            ("alias-bogus", "mx.bogus.dane.test."),
            ("cname-only", "nomx"),
        ]
        .iter()
        .map(|(alias, target)| {
            format!("{alias} CNAME {target}\n_25._tcp.{alias} TLSA 3 1 1 {ALIAS_TLSA_DATA}\n")
        })
        .collect();
        let good_zone = format!("{records}{aliases}{good_records}\n");
        write_zone(path, "good.dane.test", &good_zone, Some(&good));
        write_zone(path, "plain.dane.test", &records, None);
        write_zone(path, "bogus.dane.test", &records, Some(&bogus));
        let mut delegations = String::from("ns A 127.0.0.1\n");
        for child in ["good", "plain", "bogus"] {
            delegations.push_str(&format!("{child} NS ns.dane.test.\n"));
        }
        delegations.push_str(&ds(path, &good));
        // The DS of a key that does not sign bogus.dane.test: its chain of trust is broken.
        delegations.push_str(&ds(path, &other));
        write_zone(path, "dane.test", &delegations, Some(&parent));
        let anchor = path.join("anchor.key");
        fs::copy(path.join(format!("{parent}.key")), &anchor).expect("copy the anchor");

        let zones: String = [
            "dane.test",
            "good.dane.test",
            "plain.dane.test",
            "bogus.dane.test",
        ]
        .iter()
        .map(|zone| format!("zone:\n  name: {zone}\n  zonefile: {zone}.zone\n"))
        .collect();
        let (child, addr) = super::nsd::run_nsd(path, &zones);
        let zones = SignedZones {
            child,
            addr,
            anchor,
            dir,
        };
        Some(zones)
    }

    /// Where NSD answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The DNSKEY of `dane.test.`, as a zone-file line: the trust anchor.
    pub fn anchor(&self) -> &Path {
        &self.anchor
    }
}

impl Drop for SignedZones {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn missing_tool() -> Option<&'static str> {
    if !Path::new(NSD).exists() {
        return Some("nsd");
    }
    TOOLS.into_iter().find(|tool| {
        Command::new(tool)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
    })
}

/// A new ECDSA P-256 key for `zone` (SEP flag set, signing the whole zone); its file base name.
fn keygen(dir: &Path, zone: &str) -> String {
    let out = Command::new("ldns-keygen")
        .args(["-a", "ECDSAP256SHA256", "-k", zone])
        .current_dir(dir)
        .output()
        .expect("run ldns-keygen");
    assert!(out.status.success(), "ldns-keygen {zone}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The DS record (SHA-256) of a key, as a zone-file line.
fn ds(dir: &Path, key: &str) -> String {
    let out = Command::new("ldns-key2ds")
        .args(["-n", "-2", &format!("{key}.key")])
        .current_dir(dir)
        .output()
        .expect("run ldns-key2ds");
    assert!(out.status.success(), "ldns-key2ds {key}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `<zone>.zone` in `dir`: SOA, NS and `records`, signed with `key` (NSEC) when given.
fn write_zone(dir: &Path, zone: &str, records: &str, key: Option<&str>) {
    let text = format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ SOA ns.dane.test. admin.dane.test. 1 3600 600 86400 300\n\
         @ NS ns.dane.test.\n{records}"
    );
    let file = format!("{zone}.zone");
    let Some(key) = key else {
        fs::write(dir.join(&file), text).expect("write zone");
        return;
    };
    let unsigned = format!("{zone}.unsigned");
    fs::write(dir.join(&unsigned), text).expect("write zone");
    let out = Command::new("ldns-signzone")
        .args(["-f", &file, &unsigned, key])
        .current_dir(dir)
        .output()
        .expect("run ldns-signzone");
    assert!(out.status.success(), "ldns-signzone {zone}: {out:?}");
}

/// A port free on 127.0.0.1 for both UDP and TCP (at the time of asking).
/// The TLSA record data (`usage selector matching hex`) matching a PEM certificate file, e.g.
/// `3 1 1 <SHA-256 of its public key>` for DANE-EE.
pub fn tlsa_for_certificate(pem: &Path, usage: u8, selector: u8, matching: u8) -> String {
    let text = fs::read(pem).expect("read certificate");
    let der = rustls_pemfile_first(&text);
    sealpost::tls::dane::Tlsa::for_certificate(usage, selector, matching, &der)
        .expect("TLSA for certificate")
        .to_string()
}

/// The DER of the first certificate in a PEM text.
fn rustls_pemfile_first(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .expect("a certificate")
        .expect("PEM certificate")
        .to_vec()
}
