//! Unsigned zones served by a real NSD on loopback, for tests that need TXT records (SPF,
//! DMARC, DKIM keys) from a DNS server nobody here wrote.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NSD: &str = "/usr/sbin/nsd";

/// A running NSD; stopped (and its files removed) on drop.
pub struct Zones {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Zones {
    /// Serves each `(zone, records)`: zone-file lines with names relative to the zone (`@` for
    /// the apex), after an SOA and NS of its own; and the empty parent zone `test.`, so that
    /// names above them are answered (NXDOMAIN) rather than refused, as on the Internet (the
    /// DMARC tree walk asks for `_dmarc.test.`). `None` (with the reason on stderr) when NSD is
    /// not installed; under CI (`CI` set) a missing NSD fails the test instead.
    pub fn start(zones: &[(&str, &str)]) -> Option<Zones> {
        if !Path::new(NSD).exists() {
            let why = "nsd is not installed (apt-get install nsd)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path();
        let mut list = String::new();
        for (zone, records) in zones.iter().chain([&("test", "")]) {
            let text = format!(
                "$ORIGIN {zone}.\n$TTL 300\n@ SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 300\n\
                 @ NS ns.{zone}.\nns A 127.0.0.1\n{records}\n"
            );
            fs::write(path.join(format!("{zone}.zone")), text).expect("write zone");
            list.push_str(&format!("zone:\n  name: {zone}\n  zonefile: {zone}.zone\n"));
        }
        let (child, addr) = run_nsd(path, &list);
        let zones = Zones { child, addr, dir };
        Some(zones)
    }

    /// Where NSD answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Zones {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts NSD serving the zone files in `dir` that `zone_list` (nsd.conf `zone:` clauses) names,
/// on a free loopback port, with its files in `dir`; returns once it answers over TCP.
pub fn run_nsd(dir: &Path, zone_list: &str) -> (Child, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  username: \"\"\n  zonesdir: \"{d}\"\n  \
         database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
         zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 1\n\
         remote-control:\n  control-enable: no\n{zone_list}",
        d = dir.display()
    );
    fs::write(dir.join("nsd.conf"), conf).expect("write nsd.conf");
    let mut child = Command::new(NSD)
        .arg("-d")
        .arg("-c")
        .arg(dir.join("nsd.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nsd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(dir.join("nsd.log")).unwrap_or_default();
            panic!("nsd did not start on {addr}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

/// A TXT record's text as zone-file strings of at most 255 bytes each, in parentheses.
pub fn txt(text: &str) -> String {
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("( {} )", strings.join(" "))
}

fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
