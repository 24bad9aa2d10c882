//! Reading a conversation script: setup lines, client and server lines, actions and the
//! expectations on delivered transactions (the format is described in the parent module).

use std::path::Path;
use std::sync::Arc;

use super::{Expect, Script, Step};
use crate::auth::SenderLogins;
use crate::config::Config;
use crate::mail::{BareNewline, Reply};
use crate::smtp::server::inbound::InboundConnectors;
use crate::smtp::server::policy::LocalPolicy;
use crate::smtp::server::session::SessionConfig;
use crate::tls::TlsFacts;

/// The reply `Users::verify` gives to credentials it refuses: what `@auth-failed` answers
/// when no other reply is given.
const AUTH_FAILED: &str = "535 5.7.8 Error: authentication failed";

pub(super) fn parse_script(name: &str) -> Script {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(format!("fixtures/conversations/{name}.txt"));
    let path = path.display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut script = Script {
        name: name.to_string(),
        config: SessionConfig {
            hostname: "mx.contoso.test".into(),
            ..SessionConfig::default()
        },
        relay_allowed: false,
        peer: ([192, 0, 2, 10], 41000).into(),
        policy: LocalPolicy::new(["contoso.test"], ["alice@contoso.test", "bob@contoso.test"]),
        connectors: Vec::new(),
        inbound: None,
        in_flight: None,
        steps: Vec::new(),
    };
    let mut expect = Expect::default();
    let mut feeding = false;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        let fail = |why: &str| -> ! { panic!("{path}:{n}: {why}: {line:?}") };
        let client = line.strip_prefix("C:").map(|t| (t, true));
        if let Some((rest, crlf)) = client.or_else(|| line.strip_prefix("C|").map(|t| (t, false))) {
            let mut bytes = unescape(rest.strip_prefix(' ').unwrap_or(rest));
            if crlf {
                bytes.extend_from_slice(b"\r\n");
            }
            match script.steps.last_mut() {
                Some((_, Step::Feed(pending))) if feeding => pending.extend(bytes),
                _ => script.steps.push((n, Step::Feed(bytes))),
            }
            feeding = true;
            continue;
        }
        feeding = false;
        let (head, arg) = line.split_once(' ').unwrap_or((line, ""));
        let words = || {
            arg.split_whitespace()
                .map(|w| w.trim_matches(['<', '>']).to_string())
        };
        match head {
            "" => {}
            _ if head.starts_with('#') => {}
            "S:" => script.steps.push((n, Step::Server(arg.to_string()))),
            "D:" | "D|" => {
                let data = expect.data.get_or_insert_with(Vec::new);
                data.extend(unescape(arg));
                if head == "D:" {
                    data.extend_from_slice(b"\r\n");
                }
            }
            "!" => set(&mut script, arg).unwrap_or_else(|| fail("bad setting")),
            "@connect" => {
                let peer = match arg.trim() {
                    "" => None,
                    peer => Some(
                        peer.parse()
                            .unwrap_or_else(|_| fail("@connect [ADDRESS:PORT]")),
                    ),
                };
                script.steps.push((n, Step::Connect(peer)));
            }
            "@tls" => {
                let facts = tls_facts(arg).unwrap_or_else(|why| fail(&why));
                script.steps.push((n, Step::Tls(Box::new(facts))));
            }
            "@timeout" => script.steps.push((n, Step::Timeout)),
            "@authenticated" => script.steps.push((n, Step::Authenticated(arg.to_string()))),
            "@auth-failed" => {
                let reply = parse_reply(if arg.is_empty() { AUTH_FAILED } else { arg });
                let reply = reply.unwrap_or_else(|| fail("@auth-failed [CODE X.Y.Z text]"));
                script.steps.push((n, Step::AuthFailed(reply)));
            }
            "@from" => {
                let path = arg
                    .trim()
                    .strip_prefix('<')
                    .and_then(|a| a.strip_suffix('>'));
                expect.from = Some(path.unwrap_or_else(|| fail("@from <address>")).to_string());
            }
            "@rcpt" => expect.rcpt = Some(words().collect()),
            "@protocol" => expect.protocol = Some(arg.to_string()),
            "@flags" => expect.flags = Some(words().filter(|w| w != "-").collect()),
            "@dsn" => expect.dsn = Some(arg.to_string()),
            "@size" => expect.size = Some(arg.parse().unwrap_or_else(|_| fail("@size N"))),
            "@user" | "@connector" | "@connector-detail" if arg.trim().is_empty() => {
                fail("give a value, or - for none")
            }
            "@user" => expect.user = Some(arg.trim().to_string()),
            "@connector" => expect.connector = Some(arg.trim().to_string()),
            "@connector-detail" => expect.connector_detail = Some(arg.trim().to_string()),
            "@queued" | "@failed" => {
                let result = if head == "@queued" {
                    Ok(arg.to_string())
                } else {
                    Err(parse_reply(arg).unwrap_or_else(|| fail("@failed CODE X.Y.Z text")))
                };
                let expect = Box::new(std::mem::take(&mut expect));
                script.steps.push((n, Step::Answer(result, expect)));
            }
            _ => fail("unknown directive"),
        }
    }
    if !script.connectors.is_empty() {
        script.inbound = Some(Arc::new(inbound_connectors(&script)));
    }
    script
}

fn set(script: &mut Script, arg: &str) -> Option<()> {
    let (key, value) = arg.split_once('=')?;
    let value = value.trim();
    let list = || value.split(',').map(str::trim).filter(|s| !s.is_empty());
    match key.trim() {
        "hostname" => script.config.hostname = value.to_string(),
        "relay_allowed" => script.relay_allowed = value.parse().ok()?,
        "starttls_available" => script.config.starttls_available = value.parse().ok()?,
        "max_message_size" => script.config.max_message_size = value.parse().ok()?,
        "max_recipients" => script.config.max_recipients = value.parse().ok()?,
        "bare_newline" => {
            script.config.bare_newline = match value {
                "reject" => BareNewline::Reject,
                "normalize" => BareNewline::Normalize,
                _ => return None,
            }
        }
        "local_domains" => {
            script.policy = LocalPolicy::new(list(), script.policy.mailboxes.clone())
        }
        "mailboxes" => script.policy.mailboxes = LocalPolicy::new(list(), list()).mailboxes,
        "peer" => script.peer = value.parse().ok()?,
        "in_flight" => script.in_flight = Some(value.parse().ok()?),
        "auth" => script.config.auth = value.parse().ok()?,
        "user" => {
            let (name, addresses) = value.split_once(':')?;
            let SenderLogins::Owned(owners) = &mut script.policy.senders else {
                return None;
            };
            owners.insert(
                name.trim().to_string(),
                addresses.split(',').map(|a| a.trim().to_string()).collect(),
            );
        }
        "sender_login_mismatch" => {
            if value != "allow" {
                return None;
            }
            script.policy.senders = SenderLogins::Any;
        }
        "connector" => script.connectors.push(connector_toml(value)?),
        _ => return None,
    }
    Some(())
}

/// `NAME: key=value; key=value` as a `[[connector.inbound]]` table. `sender_domains`,
/// `client_networks` and `client_certificate_names` are comma-separated lists, `require_tls`
/// is a boolean, anything else a string (the configuration refuses keys it does not know).
fn connector_toml(value: &str) -> Option<String> {
    let (name, settings) = value.split_once(':')?;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut table = format!("[[connector.inbound]]\nname = {}\n", quote(name.trim()));
    for setting in settings.split(';').filter(|s| !s.trim().is_empty()) {
        let (key, value) = setting.split_once('=')?;
        let (key, value) = (key.trim(), value.trim());
        let value = match key {
            "sender_domains" | "client_networks" | "client_certificate_names" => {
                let items: Vec<String> = value.split(',').map(|v| quote(v.trim())).collect();
                format!("[{}]", items.join(", "))
            }
            "require_tls" => value.parse::<bool>().ok()?.to_string(),
            _ => quote(value),
        };
        table.push_str(&format!("{key} = {value}\n"));
    }
    Some(table)
}

/// The script's connectors through the configuration, as `sealpost.toml` would give them; the
/// configuration sits in `fixtures/`, so `ca_file = pki/ca.crt` names `fixtures/pki/ca.crt`.
fn inbound_connectors(script: &Script) -> InboundConnectors {
    let text = format!(
        "[server]\nhostname = {}\ndata_dir = \"d\"\n\n{}",
        toml::Value::String(script.config.hostname.clone()),
        script.connectors.join("\n")
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{}.toml", script.name));
    let config = Config::from_toml(&path, &text, None)
        .unwrap_or_else(|e| panic!("{}: connectors: {e}\n{text}", script.name));
    InboundConnectors::from_config(&config)
}

/// `VERSION CIPHER [cert=HOST]`: the handshake's facts, with the client certificate chain of
/// `fixtures/pki/HOST.crt` (and its key `HOST.key`) if one is given.
fn tls_facts(arg: &str) -> Result<TlsFacts, String> {
    let mut words = arg.split_whitespace();
    let (Some(version), Some(cipher)) = (words.next(), words.next()) else {
        return Err("@tls VERSION CIPHER [cert=HOST]".into());
    };
    let mut facts = TlsFacts::new(version, cipher);
    for word in words {
        let Some(host) = word.strip_prefix("cert=") else {
            return Err(format!("unknown @tls option {word:?}"));
        };
        let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        let key = crate::tls::load_certified_key(
            &pki.join(format!("{host}.crt")),
            &pki.join(format!("{host}.key")),
        )
        .map_err(|e| format!("client certificate {host}: {e}"))?;
        facts.peer_certificates = key.chain;
    }
    Ok(facts)
}

fn parse_reply(text: &str) -> Option<Reply> {
    let (code, rest) = text.split_once(' ')?;
    let (enhanced, text) = rest.split_once(' ')?;
    let parts: Vec<u16> = enhanced
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    Some(Reply::new(code.parse().ok()?, parts.try_into().ok()?, text))
}

/// `\r \n \t \\ \xHH` and `\{N}c` (the character `c`, N times).
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad \\x{hex}")));
            }
            Some('{') => {
                let count: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let count: usize = count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad \\{{{count}}}"));
                let what = chars
                    .next()
                    .unwrap_or_else(|| panic!("\\{{N}} needs a character"));
                out.extend(what.to_string().repeat(count).into_bytes());
            }
            other => panic!("unknown escape \\{other:?} in {text:?}"),
        }
    }
    out
}
