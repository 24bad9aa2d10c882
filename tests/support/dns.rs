//! A real DNS server on loopback (UDP and TCP on one port) answering from a table, for tests.
//!
//! ```ignore
//! let dns = TestDnsServer::start(vec![
//!     Record::mx("example.test", 10, "mx1.example.test"),
//!     Record::a("mx1.example.test", "127.0.0.1".parse()?),
//!     Record::servfail("broken.test"),
//! ]);
//! let resolver = dns.resolver(); // or sealpost::dns::Resolver::new(&[dns.addr()])
//! ```
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, MX, SOA, TXT};
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::{Name, RData};

/// TTL of every answer record.
const TTL: u32 = 60;
/// TTL and SOA minimum of negative answers: long, so a resolver that caches them is caught.
const NEGATIVE_TTL: u32 = 3600;
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// One entry of the server's table: a record, or a fault injected for a name.
#[derive(Clone, Debug)]
pub struct Record {
    /// Lower case, no trailing dot.
    name: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Data(RData),
    /// Answer SERVFAIL, for every type or just one.
    ServFail(Option<RecordType>),
    /// Never answer, for every type or just one.
    NoAnswer(Option<RecordType>),
}

impl Record {
    /// `name MX preference exchange`.
    pub fn mx(name: &str, preference: u16, exchange: &str) -> Record {
        Record::data(name, RData::MX(MX::new(preference, dns_name(exchange))))
    }

    /// RFC 7505 null MX: `name MX 0 .`.
    pub fn null_mx(name: &str) -> Record {
        Record::data(name, RData::MX(MX::new(0, Name::root())))
    }

    /// `name A addr`.
    pub fn a(name: &str, addr: Ipv4Addr) -> Record {
        Record::data(name, RData::A(addr.into()))
    }

    /// `name AAAA addr`.
    pub fn aaaa(name: &str, addr: Ipv6Addr) -> Record {
        Record::data(name, RData::AAAA(addr.into()))
    }

    /// `name CNAME target`; the server adds the target's records to the answer when it has them.
    pub fn cname(name: &str, target: &str) -> Record {
        Record::data(name, RData::CNAME(CNAME(dns_name(target))))
    }

    /// `name TXT text`; also handy to make a name exist without addresses or MX.
    pub fn txt(name: &str, text: &str) -> Record {
        Record::data(name, RData::TXT(TXT::new(vec![text.to_string()])))
    }

    /// Every query for `name` gets SERVFAIL (narrow it with [`Record::for_type`]).
    pub fn servfail(name: &str) -> Record {
        Record {
            name: key(name),
            kind: Kind::ServFail(None),
        }
    }

    /// Every query for `name` is read, counted and never answered (see [`Record::for_type`]).
    pub fn no_answer(name: &str) -> Record {
        Record {
            name: key(name),
            kind: Kind::NoAnswer(None),
        }
    }

    /// Limit a fault to one query type, e.g. `Record::servfail("h.test").for_type(RecordType::AAAA)`.
    pub fn for_type(self, rtype: RecordType) -> Record {
        let kind = match self.kind {
            Kind::ServFail(_) => Kind::ServFail(Some(rtype)),
            Kind::NoAnswer(_) => Kind::NoAnswer(Some(rtype)),
            Kind::Data(_) => panic!("for_type applies to servfail/no_answer, not to data records"),
        };
        Record { kind, ..self }
    }

    fn data(name: &str, rdata: RData) -> Record {
        Record {
            name: key(name),
            kind: Kind::Data(rdata),
        }
    }
}

/// One query the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenQuery {
    /// Lower case, no trailing dot.
    pub name: String,
    pub rtype: RecordType,
    /// Arrived over TCP rather than UDP.
    pub tcp: bool,
}

/// The server; stops (and joins its threads) on drop.
pub struct TestDnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    table: Mutex<Vec<Record>>,
    seen: Mutex<Vec<SeenQuery>>,
    stop: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl TestDnsServer {
    /// Bind UDP and TCP on one `127.0.0.1` port and serve `records`. Panics if it cannot bind.
    pub fn start(records: Vec<Record>) -> TestDnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("UDP socket has an address");
        udp.set_read_timeout(Some(POLL)).expect("set UDP timeout");
        let shared = Arc::new(Shared {
            table: Mutex::new(records),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let udp_shared = Arc::clone(&shared);
        let tcp_shared = Arc::clone(&shared);
        let threads = vec![
            std::thread::spawn(move || serve_udp(udp, &udp_shared)),
            std::thread::spawn(move || serve_tcp(tcp, &tcp_shared)),
        ];
        TestDnsServer {
            addr,
            shared,
            threads,
        }
    }

    /// Where the server listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sealpost resolver that asks only this server.
    pub fn resolver(&self) -> sealpost::dns::Resolver {
        sealpost::dns::Resolver::new(&[self.addr]).expect("resolver for the test DNS server")
    }

    /// Queries received so far (UDP and TCP, including unanswered ones).
    pub fn query_count(&self) -> usize {
        lock(&self.shared.seen).len()
    }

    /// Queries received for `name` (any case, trailing dot optional) and `rtype`.
    pub fn queries_for(&self, name: &str, rtype: RecordType) -> usize {
        let name = key(name);
        lock(&self.shared.seen)
            .iter()
            .filter(|q| q.name == name && q.rtype == rtype)
            .count()
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<SeenQuery> {
        lock(&self.shared.seen).clone()
    }

    /// Replace the whole table; later queries see the new records.
    pub fn set_records(&self, records: Vec<Record>) {
        *lock(&self.shared.table) = records;
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocked threads; errors only mean they are already gone.
        if let Ok(waker) = UdpSocket::bind("127.0.0.1:0") {
            let _ = waker.send_to(&[], self.addr);
        }
        let _ = TcpStream::connect_timeout(&self.addr, POLL);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let connections: Vec<_> = lock(&self.shared.connections).drain(..).collect();
        for thread in connections {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP on 127.0.0.1");
        let port = udp.local_addr().expect("UDP socket has an address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

fn serve_udp(socket: UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(_) => continue, // timeout: look at the stop flag again
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if let Some(reply) = shared.respond(&buf[..len], false) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

fn serve_tcp(listener: TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let conn_shared = Arc::clone(shared);
        let handle = std::thread::spawn(move || serve_connection(stream, &conn_shared));
        lock(&shared.connections).push(handle);
    }
}

/// RFC 1035 §4.2.2 framing: two-byte length, then the message; many messages per connection.
fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let packet: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            let Some(reply) = shared.respond(&packet, true) else {
                continue;
            };
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = reply_len.to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// What the table says about one question.
enum Outcome {
    Drop,
    ServFail,
    Answer {
        answers: Vec<hickory_proto::rr::Record>,
        nxdomain: bool,
        /// The name the chain ended at, for the SOA of a negative answer.
        last: String,
    },
}

impl Shared {
    /// Decode a query, log it, and encode the reply (`None`: ignore the packet).
    fn respond(&self, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let question = request.queries.first()?.clone();
        lock(&self.seen).push(SeenQuery {
            name: key(&question.name().to_ascii()),
            rtype: question.query_type(),
            tcp,
        });
        let outcome = self.lookup(question.name(), question.query_type());

        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.metadata.recursion_desired = request.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        reply.add_query(question);
        let mut limit = 512;
        if let Some(edns) = &request.edns {
            limit = usize::from(edns.max_payload()).max(512);
            let mut ours = Edns::new();
            ours.set_max_payload(1232);
            reply.set_edns(ours);
        }
        match outcome {
            Outcome::Drop => return None,
            Outcome::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
            Outcome::Answer {
                answers,
                nxdomain,
                last,
            } => {
                if nxdomain {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                if answers.is_empty() || nxdomain {
                    reply.add_authority(soa_for(&last));
                }
                reply.add_answers(answers);
            }
        }
        let bytes = reply.to_vec().ok()?;
        if !tcp && bytes.len() > limit {
            return reply.truncate().to_vec().ok();
        }
        Some(bytes)
    }

    /// Answer `qname`/`qtype` from the table, following up to 8 CNAMEs.
    fn lookup(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let table = lock(&self.table).clone();
        let mut owner = qname.clone();
        let mut answers = Vec::new();
        for _ in 0..8 {
            let name = key(&owner.to_ascii());
            let here: Vec<&Record> = table.iter().filter(|r| r.name == name).collect();
            for record in &here {
                match record.kind {
                    Kind::ServFail(only) if only.is_none_or(|t| t == qtype) => {
                        return Outcome::ServFail;
                    }
                    Kind::NoAnswer(only) if only.is_none_or(|t| t == qtype) => {
                        return Outcome::Drop
                    }
                    _ => {}
                }
            }
            let data = here.iter().filter_map(|r| match &r.kind {
                Kind::Data(rdata) => Some(rdata),
                _ => None,
            });
            let cname = data.clone().find_map(|rdata| match rdata {
                RData::CNAME(CNAME(target)) if qtype != RecordType::CNAME => Some(target.clone()),
                _ => None,
            });
            if let Some(target) = cname {
                let rdata = RData::CNAME(CNAME(target.clone()));
                answers.push(hickory_proto::rr::Record::from_rdata(owner, TTL, rdata));
                owner = target;
                continue;
            }
            answers.extend(
                data.filter(|rdata| rdata.record_type() == qtype)
                    .map(|rdata| {
                        hickory_proto::rr::Record::from_rdata(owner.clone(), TTL, rdata.clone())
                    }),
            );
            let exists = table
                .iter()
                .any(|r| r.name == name || r.name.ends_with(&format!(".{name}")));
            return Outcome::Answer {
                nxdomain: !exists,
                answers,
                last: name,
            };
        }
        Outcome::ServFail // CNAME loop
    }
}

/// An SOA for the "zone" of `name` (its last two labels), with a long negative TTL.
fn soa_for(name: &str) -> hickory_proto::rr::Record {
    let labels: Vec<&str> = name.split('.').collect();
    let zone = labels[labels.len().saturating_sub(2)..].join(".");
    let soa = SOA::new(
        dns_name(&format!("ns.{zone}")),
        dns_name(&format!("hostmaster.{zone}")),
        1,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    hickory_proto::rr::Record::from_rdata(dns_name(&zone), NEGATIVE_TTL, RData::SOA(soa))
}

/// Parse a test name as absolute; test tables are code, so a bad name is a bug in the test.
fn dns_name(name: &str) -> Name {
    let mut parsed =
        Name::from_ascii(name).unwrap_or_else(|e| panic!("bad test DNS name {name:?}: {e}"));
    parsed.set_fqdn(true);
    parsed
}

/// Table key: lower case, no trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
