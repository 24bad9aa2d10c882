//! The stage between the SMTP server and the queue: adds the Received header, checks senders from
//! outside, applies the transport rules, DKIM-signs our own mail, then writes the
//! message durably. The server answers 250 only after this returns a queue id.

pub mod apply;
pub mod authenticate;
mod headers;
mod message;
pub mod rms;
pub mod sign;
pub mod smime;

use crate::mail::DomainSet;
use std::sync::{Arc, RwLock};

use crate::queue::Wake;
use chrono::{DateTime, Utc};

use crate::mail::Reply;
use crate::queue::retransmit::Retransmissions;
use crate::queue::{new_queue_id, Envelope, QueueError, QueueStore, Staged, Staging};
use crate::rules::{evaluate, MessageFacts, RuleSet};
use crate::smtp::server::inbound::InboundVerdict;
use crate::smtp::server::{Receiver, Transaction};
use crate::telemetry::trace::{message_id_hash, TraceTls};
use crate::telemetry::{Telemetry, TraceEvent};
use apply::{apply, Content, Protectors, Rms, Signer, Smime};
use message::Message;

/// Turns finished transactions into queue files.
pub struct Cleanup {
    hostname: String,
    queue: Arc<dyn QueueStore>,
    wake: Arc<Wake>,
    rules: RwLock<RuleSet>,
    local_domains: DomainSet,
    smime: Option<Arc<dyn Smime>>,
    signer: Option<Arc<dyn Signer>>,
    rms: Option<Arc<dyn Rms>>,
    telemetry: Arc<Telemetry>,
    retransmissions: Option<Arc<Retransmissions>>,
    /// Add a missing Date and Message-ID to every message, not only to submitted ones.
    always_add_missing_headers: bool,
    sender_auth: authenticate::SenderAuth,
}

impl Cleanup {
    /// `wake` is told each message queued so the runner starts on it at once.
    pub fn new(hostname: &str, queue: Arc<dyn QueueStore>, wake: Arc<Wake>) -> Self {
        Cleanup {
            hostname: hostname.to_string(),
            queue,
            wake,
            rules: RwLock::default(),
            local_domains: DomainSet::default(),
            smime: None,
            signer: None,
            rms: None,
            telemetry: Arc::new(Telemetry::default()),
            retransmissions: None,
            always_add_missing_headers: false,
            sender_auth: authenticate::SenderAuth::default(),
        }
    }

    /// Checks of mail from outside and DKIM signing of ours.
    pub fn with_sender_auth(mut self, sender_auth: authenticate::SenderAuth) -> Self {
        self.sender_auth = sender_auth;
        self
    }

    /// Recognise messages sent again by clients that did not see our 250 (see
    /// [`crate::queue::retransmit`]).
    pub fn with_retransmissions(mut self, r: Arc<Retransmissions>) -> Self {
        self.retransmissions = Some(r);
        self
    }

    /// Where queued messages are counted and traced.
    /// Adds a missing Date or Message-ID to every message (Postfix
    /// `always_add_missing_headers`); without it only submitted (authenticated) mail gets them.
    pub fn with_always_add_missing_headers(mut self, always: bool) -> Self {
        self.always_add_missing_headers = always;
        self
    }

    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The transport rules to apply, and the local domains they call internal.
    pub fn with_rules(mut self, rules: RuleSet, local_domains: DomainSet) -> Self {
        self.rules = RwLock::new(rules);
        self.local_domains = local_domains;
        self
    }

    /// What the `smime_encrypt` action uses.
    pub fn with_smime(mut self, smime: Arc<dyn Smime>) -> Self {
        self.smime = Some(smime);
        self
    }

    /// What the `smime_sign` action uses.
    pub fn with_signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// What the `rms_protect` action uses.
    pub fn with_rms(mut self, rms: Arc<dyn Rms>) -> Self {
        self.rms = Some(rms);
        self
    }

    /// Replaces the rules (SIGHUP); messages in flight finish under the old ones.
    pub fn replace_rules(&self, rules: RuleSet) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// Starts staging the content of a new message (see [`QueueStore::stage`]); it is fingerprinted
    /// on the way when retransmissions are recognised.
    pub fn stage(&self) -> Result<Staging, QueueError> {
        let fingerprinter = self.retransmissions.as_ref().map(|r| r.fingerprinter());
        self.queue.stage(fingerprinter)
    }

    /// Applies the transport rules to the staged message and writes each resulting copy (with
    /// our Received header in front) and its envelope to stable storage. Blocking: call it off
    /// the async reactor. On error nothing is queued and the client gets the reply.
    ///
    /// Only the header section is held in memory, unless a rule looks at the body or encrypts:
    /// then the whole message is, once, and it counts against the in-flight budget.
    pub fn enqueue(&self, tx: &Transaction, mut staged: Staged) -> Result<String, Reply> {
        let id = new_queue_id();
        let now = Utc::now();
        let HeaderFacts {
            message_id,
            relayed,
            tls_required_no,
        } = header_facts(staged.head());
        // RFC 8689 §4.1: with REQUIRETLS on MAIL FROM the header field is ignored.
        let tls_required_no = tls_required_no && !tx.requiretls;
        let transmission = match (&self.retransmissions, staged.take_fingerprinter()) {
            (Some(r), Some(f)) if message_id.is_some() || relayed => {
                Some((r, f.finish(&tx.mail_from, &tx.rcpt_to)))
            }
            _ => None,
        };
        if let Some((r, fp)) = &transmission {
            if let Some(ids) = r.accepted_as(fp, now.timestamp()) {
                tracing::info!(client = %tx.peer, from = %tx.mail_from, queue_id = %ids,
                    "the same message again (the client missed our 250): acknowledged, not queued twice");
                self.telemetry.metrics.retransmission();
                return Ok(ids);
            }
        }
        // The session decided the connector at MAIL FROM; it names it for the trace and rules.
        let connector = tx.inbound.as_ref();
        let mut received = received_header(&self.hostname, tx, connector, &id, now);
        if tx.authenticated.is_some() || self.always_add_missing_headers {
            received.push_str(&missing_headers(staged.header(), &self.hostname, &id, now));
        }
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut message = Message::new(received, &staged);
        if rules.needs_body()
            || message.header_unknown()
            || self.sender_auth.needs_whole(tx, staged.header())
        {
            message.load(tx, &staged)?;
        }
        let auth = self
            .sender_auth
            .check(&self.hostname, tx, &mut message, &self.telemetry)
            .inspect_err(|reply| {
                tracing::info!(client = %tx.peer, from = %tx.mail_from, %reply, "refused by DMARC policy");
            })?;
        let facts = MessageFacts {
            mail_from: &tx.mail_from,
            recipients: &tx.rcpt_to,
            message: message.for_rules(),
            size: message.len(),
            local_domains: &self.local_domains,
            authenticated: tx.authenticated.is_some(),
            inbound_connector: connector.map(|c| c.connector.as_str()),
            sender_auth: auth.as_ref(),
        };
        let evaluation = evaluate(&rules, &facts);
        // "rule:action" for every action applied, for the log line of each message.
        let mut applied: Vec<String> = evaluation
            .groups
            .iter()
            .flat_map(|g| {
                g.actions
                    .iter()
                    .map(|a| format!("{}:{}", a.rule, a.action.kind()))
            })
            .collect();
        applied.dedup();
        let rules_applied = applied.clone();
        let applied = applied.join(",");
        if Content::needed_by(&evaluation) {
            message.load(tx, &staged)?;
        }
        let protectors = Protectors {
            smime: self.smime.as_deref(),
            rms: self.rms.as_deref(),
            signer: self.signer.as_deref(),
        };
        let original = message.original();
        let copies =
            apply(&evaluation, &tx.mail_from, &original, protectors).inspect_err(|reply| {
                tracing::info!(client = %tx.peer, from = %tx.mail_from, rules = %applied,
                %reply, "refused by transport rule");
            })?;
        let mut encrypting = false;
        for g in &evaluation.groups {
            for a in &g.actions {
                let kind = a.action.kind();
                encrypting |= kind == "smime_encrypt" || kind == "rms_protect";
                self.telemetry.metrics.rule_match(&a.rule, kind);
            }
        }
        let signer = self.sender_auth.signer(tx, original.head);
        let connector_name = connector.map(|c| c.connector.clone());
        let mut ids: Vec<String> = Vec::with_capacity(copies.len());
        // Copies stored as claimed, for a delivery slot that was free, and those named to the
        // runner (see `Wake::reserve`).
        let mut claimed = Vec::new();
        let mut named = Vec::new();
        for (i, copy) in copies.into_iter().enumerate() {
            let copy_id = if i == 0 { id.clone() } else { new_queue_id() };
            let mut envelope = Envelope::new(
                copy_id.clone(),
                tx.mail_from.clone(),
                copy.recipients,
                tx.helo.clone(),
                tx.peer.to_string(),
                now.timestamp(),
            );
            envelope.require_tls = copy.require_tls;
            envelope.requiretls = tx.requiretls;
            envelope.tls_required_no = tls_required_no;
            envelope.route_via = copy.route_via;
            envelope.transmission = transmission.as_ref().map(|(_, fp)| fp.clone());
            envelope.ret = tx.dsn.ret;
            envelope.envid = tx.dsn.envid.clone();
            for r in &mut envelope.recipients {
                let dsn = tx.rcpt_dsn(&r.address);
                (r.notify, r.orcpt) = (dsn.notify, dsn.orcpt);
            }
            let tail = message.tail(&staged);
            let mut parts = message.parts(&copy.content, &tail);
            let signature = match signer {
                Some(s) => authenticate::sign(s, &copy.content.bytes(&original)?, &self.telemetry),
                None => None,
            };
            if let Some(field) = &signature {
                parts.insert(0, crate::queue::format::Part::Bytes(field.as_bytes()));
            }
            let size = parts.iter().map(|p| p.len()).sum::<u64>();
            let stored = match self.wake.reserve(size) {
                Some(slot) => self
                    .queue
                    .enqueue_claimed(&envelope, &parts)
                    .map(|(env, msg)| claimed.push((slot, env, msg))),
                None => self
                    .queue
                    .enqueue_parts(&envelope, &parts)
                    .map(|()| named.push(copy_id.clone())),
            };
            if let Err(e) = stored {
                tracing::error!(error = %e, client = %tx.peer, "queue write failed; message refused with 451");
                // This copy too, when it was stored before the error (claimed, then unreadable);
                // never when its id was found taken by another message.
                let this = (!matches!(e, QueueError::Exists { .. })).then_some(&copy_id);
                for written in ids.iter().chain(this) {
                    let _ = self.queue.delete(written);
                }
                return Err(Reply::new(451, [4, 3, 0], "Error: queue file write error"));
            }
            tracing::info!(
                queue_id = %copy_id,
                from = %tx.mail_from,
                nrcpt = envelope.recipients.len(),
                size,
                client = %tx.peer,
                connector = connector.map(|c| c.connector.as_str()).unwrap_or(""),
                rules = %applied,
                requiretls = tx.requiretls,
                tls_required_no,
                "queued"
            );
            self.telemetry.metrics.received(connector_name.as_deref());
            let added = match encrypting {
                true => encryption_added(
                    original.whole.unwrap_or(original.head),
                    copy.content.head(&original),
                ),
                false => Vec::new(),
            };
            for kind in added {
                self.telemetry.metrics.encryption(kind);
            }
            self.telemetry.trace(
                &copy_id,
                TraceEvent::Received {
                    message_id_sha256: message_id.as_deref().map(message_id_hash),
                    from: tx.mail_from.clone(),
                    to: envelope
                        .recipients
                        .iter()
                        .map(|r| r.address.clone())
                        .collect(),
                    client: tx.peer.to_string(),
                    helo: tx.helo.clone(),
                    protocol: tx.protocol.as_str().to_string(),
                    tls: tx.tls.as_ref().map(TraceTls::from),
                    connector: connector_name.clone(),
                    authenticated: tx.authenticated.clone(),
                    rules: rules_applied.clone(),
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    chunking: tx.chunking,
                    requiretls: tx.requiretls,
                    tls_required_no,
                },
            );
            ids.push(copy_id);
        }
        self.wake.arrived(claimed, named);
        let ids = ids.join(" ");
        if let Some((r, fp)) = &transmission {
            r.accepted(fp, &ids, now.timestamp());
        }
        Ok(ids)
    }
}

impl Receiver for Cleanup {
    fn stage(&self) -> Result<Staging, QueueError> {
        Cleanup::stage(self)
    }

    fn enqueue(&self, tx: &Transaction, staged: Staged) -> Result<String, Reply> {
        Cleanup::enqueue(self, tx, staged)
    }
}

/// Keeps header text on one line and printable: what the client sent is not trusted.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

/// The Date and Message-ID fields a message lacks (RFC 5322 §3.6 requires Date and
/// recommends Message-ID), as Postfix's cleanup adds them: written after our Received header.
/// Nothing when the header section was too long to be kept while it arrived.
fn missing_headers(header: Option<&[u8]>, hostname: &str, id: &str, now: DateTime<Utc>) -> String {
    let Some(header) = header else {
        return String::new();
    };
    let mut out = String::new();
    if !headers::has(header, "Date") {
        out.push_str(&format!(
            "Date: {}\r\n",
            now.format("%a, %d %b %Y %H:%M:%S +0000")
        ));
    }
    if !headers::has(header, "Message-ID") {
        out.push_str(&format!(
            "Message-ID: <{}.{id}@{hostname}>\r\n",
            now.format("%Y%m%d%H%M%S")
        ));
    }
    out
}

/// A Postfix-style Received header (RFC 5321 §4.4) naming the protocol (RFC 3848) and, over TLS,
/// the version and cipher, and the inbound connector the message came through.
pub fn received_header(
    hostname: &str,
    tx: &Transaction,
    connector: Option<&InboundVerdict>,
    id: &str,
    now: DateTime<Utc>,
) -> String {
    let ip = tx.peer.ip();
    let mut h = format!("Received: from {} ([{}])\r\n", sanitize(&tx.helo), ip);
    if let Some(tls) = &tx.tls {
        // RFC 8689: the sender's demand is on record for every later hop and reader.
        let requiretls = if tx.requiretls { ", REQUIRETLS" } else { "" };
        h.push_str(&format!(
            "\t(using {} with cipher {}{requiretls})\r\n",
            tls.version, tls.cipher
        ));
    }
    if let Some(v) = connector {
        h.push_str(&format!("\t(connector {}: {})\r\n", v.connector, v.detail));
    }
    h.push_str(&format!(
        "\tby {} (sealpost) with {} id {}",
        hostname,
        tx.protocol.as_str(),
        id
    ));
    if let [only] = tx.rcpt_to.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", sanitize(only)));
    }
    h.push_str(&format!(
        ";\r\n\t{}\r\n",
        now.format("%a, %d %b %Y %H:%M:%S %z (UTC)")
    ));
    h
}

/// What cleanup reads in the header section as it arrived.
#[derive(Debug, Default, PartialEq, Eq)]
struct HeaderFacts {
    /// The Message-ID header, without angle brackets.
    message_id: Option<String>,
    /// A previous hop stamped the message with a Received header (which names that hop's queue
    /// id, making the bytes unique to one transmission source).
    relayed: bool,
    /// `TLS-Required: No` (RFC 8689 §5; the value is case-insensitive).
    tls_required_no: bool,
}

/// One header parse for all of [`HeaderFacts`].
fn header_facts(data: &[u8]) -> HeaderFacts {
    let Some(m) = mail_parser::MessageParser::new().parse_headers(data) else {
        return HeaderFacts::default();
    };
    let mut facts = HeaderFacts {
        message_id: m.message_id().map(str::to_string),
        ..HeaderFacts::default()
    };
    for (name, value) in m.headers_raw() {
        if name.eq_ignore_ascii_case("Received") {
            facts.relayed = true;
        } else if name.eq_ignore_ascii_case("TLS-Required") {
            facts.tls_required_no |= value.trim().eq_ignore_ascii_case("no");
        }
    }
    facts
}

/// The encryption a transport rule applied to a copy ("smime", "rms"), told by the wrapper the
/// copy carries near its start and the original did not.
fn encryption_added(original: &[u8], copy: &[u8]) -> Vec<&'static str> {
    const MARKERS: [(&str, &[u8]); 2] = [
        ("smime", b"application/pkcs7-mime"),
        ("rms", b"application/vnd.sealpost.rms"),
    ];
    let head = |m: &[u8]| m[..m.len().min(64 * 1024)].to_ascii_lowercase();
    let (original, copy) = (head(original), head(copy));
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    MARKERS
        .iter()
        .filter(|(_, marker)| has(&copy, marker) && !has(&original, marker))
        .map(|(kind, _)| *kind)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encryption_is_told_by_the_wrapper_a_copy_gained() {
        let plain = b"Content-Type: text/plain\r\n\r\nhi\r\n";
        let smime =
            b"Content-Type: Application/PKCS7-MIME; smime-type=enveloped-data\r\n\r\nMII\r\n";
        let rms = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: application/vnd.sealpost.rms; name=message.sealed\r\n\r\nx\r\n--b--\r\n";
        assert_eq!(super::encryption_added(plain, smime), vec!["smime"]);
        assert_eq!(super::encryption_added(plain, rms), vec!["rms"]);
        assert!(super::encryption_added(plain, plain).is_empty());
        assert!(
            super::encryption_added(smime, smime).is_empty(),
            "already encrypted on arrival is not counted"
        );
    }

    use super::*;
    use crate::crypto::keyfile::ServiceKey;
    use crate::queue::Spool;
    use crate::smtp::server::Protocol;
    use crate::tls::TlsFacts;

    fn tx(tls: bool, rcpts: &[&str]) -> Transaction {
        Transaction {
            helo: "client.test".into(),
            protocol: if tls {
                Protocol::Esmtps
            } else {
                Protocol::Esmtp
            },
            peer: "127.0.0.1:40000".parse().unwrap(),
            tls: tls.then(|| TlsFacts::new("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
            mail_from: "a@a.test".into(),
            rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
            eight_bit: false,
            smtputf8: false,
            dsn: Default::default(),
            rcpt_dsn: rcpts.iter().map(|_| Default::default()).collect(),
            requiretls: false,
            authenticated: None,
            inbound: None,
            size: 0,
            chunking: false,
            in_flight: crate::queue::Reservation::unlimited(),
        }
    }

    #[test]
    fn received_header_over_tls_names_version_and_cipher() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T11:31:37Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = received_header("mx.b.test", &tx(true, &["bob@b.test"]), None, "ABC", now);
        assert_eq!(
            h,
            "Received: from client.test ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\
             \tby mx.b.test (sealpost) with ESMTPS id ABC\r\n\tfor <bob@b.test>;\r\n\tSun, 22 Nov 2026 11:31:37 +0000 (UTC)\r\n"
        );
    }

    #[test]
    fn received_header_records_requiretls() {
        let mut t = tx(true, &["bob@b.test"]);
        t.requiretls = true;
        let h = received_header("mx.b.test", &t, None, "ABC", Utc::now());
        assert!(
            h.contains("(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384, REQUIRETLS)\r\n"),
            "{h}"
        );
    }

    #[test]
    fn tls_required_no_is_read_from_the_header_section() {
        let facts = |head: &[u8]| header_facts(head).tls_required_no;
        assert!(facts(b"Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n"));
        assert!(facts(b"tls-required:no\r\n\r\n"));
        assert!(!facts(b"TLS-Required: Yes\r\n\r\n"));
        assert!(
            !facts(b"Subject: x\r\n\r\nTLS-Required: No\r\n"),
            "not in the body"
        );
        let f = header_facts(b"Received: x\r\nMessage-ID: <a@b>\r\n\r\n");
        assert_eq!((f.message_id.as_deref(), f.relayed), (Some("a@b"), true));
    }

    #[test]
    fn received_header_in_clear_with_several_recipients() {
        let now = Utc::now();
        let mut t = tx(false, &["a@b.test", "c@b.test"]);
        t.helo = "evil\r\nX-Injected: yes".into();
        let h = received_header("mx.b.test", &t, None, "ABC", now);
        assert!(h.contains("with ESMTP id ABC;"), "{h}");
        assert!(!h.contains("using"));
        assert!(!h.contains("for <"));
        assert!(!h.contains("\r\nX-Injected"), "{h}");
    }

    #[test]
    fn enqueue_writes_a_claimable_queue_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let key = ServiceKey::load_or_create(keys.path()).unwrap();
        let spool = Arc::new(Spool::open(dir.path(), Arc::new(key)).unwrap());
        let cleanup = Cleanup::new("mx.b.test", spool.clone(), Arc::default());
        let mut staging = cleanup.stage().unwrap();
        staging.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        let id = cleanup
            .enqueue(&tx(true, &["bob@b.test"]), staging.finish().unwrap())
            .unwrap();
        let file = std::fs::read(spool.path(crate::queue::QueueState::Incoming, &id)).unwrap();
        let clear = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
        assert!(clear(b"SEALPOST-QUEUE 2\n") && !clear(b"Received: from client.test"));
        let (env, msg) = spool.claim(&id).unwrap().unwrap();
        assert_eq!(env.mail_from, "a@a.test");
        assert_eq!(env.recipients[0].address, "bob@b.test");
        assert!(msg.starts_with(b"Received: from client.test"));
        assert!(msg.ends_with(b"\r\n\r\nbody\r\n"));
    }
}
