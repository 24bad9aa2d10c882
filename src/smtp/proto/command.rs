//! SMTP command parsing (RFC 5321 §4.1): one command line in, a typed command or a 5xx reply out.
//!
//! The parser is strict about what this server advertises (SIZE, 8BITMIME, SMTPUTF8, DSN,
//! REQUIRETLS) and knows nothing about session state: sequence errors, limits and whether
//! REQUIRETLS is on offer are the session's business.
//! A parameter given twice is `501 5.5.4`; an unknown one is `555 5.5.4` (RFC 5321 §4.1.1.11).

use super::address::parse_path;
use super::dsn::{self, MailDsn, RcptDsn};
use super::Reply;

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// EHLO with the client's name (or address literal), as given.
    Ehlo(String),
    /// HELO with the client's name, as given.
    Helo(String),
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    /// BDAT (RFC 3030): a chunk of `size` octets follows the command line; `last` ends the
    /// message.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// AUTH (RFC 4954): the mechanism (uppercase) and the initial response, if given.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// A known SMTP command this server does not offer (EXPN, ETRN, TURN, ...).
    NotImplemented,
    /// Not SMTP at all (HTTP `GET`/`POST`, proxy `CONNECT`): a cross-protocol attempt.
    Forbidden,
}

/// MAIL FROM and its parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailFrom {
    /// The reverse-path without angle brackets; empty for the null sender `<>`.
    pub address: String,
    /// SIZE= (RFC 1870), saturated at `u64::MAX`.
    pub size: Option<u64>,
    /// BODY=8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// RET= and ENVID= (RFC 3461).
    pub dsn: MailDsn,
    /// REQUIRETLS (RFC 8689): the message may travel only over verified TLS to servers that
    /// offer REQUIRETLS. Whether the session may ask for it is the session's business.
    pub requiretls: bool,
}

/// RCPT TO and its parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptTo {
    /// The forward-path's mailbox, without angle brackets.
    pub address: String,
    /// NOTIFY= and ORCPT= (RFC 3461).
    pub dsn: RcptDsn,
}

/// Commands recognised but not implemented: answered 502 rather than "not recognized".
const NOT_IMPLEMENTED: &[&str] = &[
    "EXPN", "ETRN", "TURN", "ATRN", "BURL", "VERB", "SEND", "SOML", "SAML", "LHLO",
];
/// Postfix's smtpd_forbidden_commands: a web browser or proxy client talking to port 25.
const FORBIDDEN: &[&str] = &["CONNECT", "GET", "POST"];

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let split = line.iter().position(|&b| b == b' ' || b == b'\t');
    let (verb, args) = match split {
        Some(pos) => (&line[..pos], &line[pos + 1..]),
        None => (line, &b""[..]),
    };
    let verb = std::str::from_utf8(verb).map_err(|_| not_recognized())?;
    let is = |name: &str| verb.eq_ignore_ascii_case(name);
    if FORBIDDEN.iter().any(|name| is(name)) {
        return Ok(Command::Forbidden);
    }
    if NOT_IMPLEMENTED.iter().any(|name| is(name)) {
        return Ok(Command::NotImplemented);
    }
    let args = text(args)?;
    let command = match verb.to_ascii_uppercase().as_str() {
        "EHLO" => Command::Ehlo(hostname(args, "EHLO")?),
        "HELO" => Command::Helo(hostname(args, "HELO")?),
        "MAIL" => Command::Mail(mail(args)?),
        "RCPT" => Command::Rcpt(rcpt(args)?),
        "DATA" => no_args(args, "DATA", Command::Data)?,
        "BDAT" => bdat(args)?,
        "RSET" => no_args(args, "RSET", Command::Rset)?,
        "QUIT" => no_args(args, "QUIT", Command::Quit)?,
        "STARTTLS" => no_args(args, "STARTTLS", Command::StartTls)?,
        "AUTH" => {
            let mut words = args.split_ascii_whitespace();
            let mechanism = words
                .next()
                .ok_or_else(|| syntax("AUTH mechanism [initial-response]"))?;
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(syntax("AUTH mechanism [initial-response]"));
            }
            Command::Auth {
                mechanism: mechanism.to_ascii_uppercase(),
                initial,
            }
        }
        "NOOP" => Command::Noop,
        "HELP" => Command::Help,
        "VRFY" if args.is_empty() => return Err(syntax("VRFY address")),
        "VRFY" => Command::Vrfy,
        _ => return Err(not_recognized()),
    };
    Ok(command)
}

/// `chunk-size [SP "LAST"]` (RFC 3030 §2).
fn bdat(args: &str) -> Result<Command, Reply> {
    let bad = || syntax("BDAT chunk-size [LAST]");
    let mut words = args.split(' ');
    let size = words.next().unwrap_or_default();
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let size = size.parse::<u64>().map_err(|_| bad())?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(bad()),
    };
    if words.next().is_some() {
        return Err(bad());
    }
    Ok(Command::Bdat { size, last })
}

fn not_recognized() -> Reply {
    Reply::new(500, [5, 5, 2], "Error: command not recognized")
}

fn syntax(usage: &str) -> Reply {
    Reply::new(501, [5, 5, 4], format!("Syntax: {usage}"))
}

/// The arguments as text without surrounding blanks: valid UTF-8 and free of control characters,
/// so that they are safe to echo in replies and to write in headers and logs.
fn text(args: &[u8]) -> Result<&str, Reply> {
    let bad = || Reply::new(501, [5, 5, 4], "Error: invalid characters in command");
    let args = std::str::from_utf8(args).map_err(|_| bad())?;
    if args.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad());
    }
    Ok(args.trim_matches([' ', '\t']))
}

fn no_args(args: &str, verb: &str, command: Command) -> Result<Command, Reply> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(syntax(verb))
    }
}

fn hostname(args: &str, verb: &str) -> Result<String, Reply> {
    if args.is_empty() || args.len() > 255 {
        return Err(syntax(&format!("{verb} hostname")));
    }
    Ok(args.to_string())
}

/// Strips a case-insensitive `FROM:` / `TO:` keyword and blanks after the colon.
fn after_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| args[keyword.len()..].trim_start_matches([' ', '\t']))
}

/// The parameters after a path: nothing, or blank-separated `KEY[=VALUE]` words.
fn params(rest: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then(|| rest.split_ascii_whitespace())
}

fn unsupported(param: &str) -> Reply {
    Reply::new(555, [5, 5, 4], format!("Unsupported option: {param}"))
}

/// Splits `KEY[=VALUE]` words, refusing a key given twice.
fn keyed<'a>(
    words: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = Result<(String, Option<&'a str>, &'a str), Reply>> {
    let mut seen: Vec<String> = Vec::new();
    words.map(move |param| {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (param, None),
        };
        let key = key.to_ascii_uppercase();
        if seen.contains(&key) {
            return Err(Reply::new(
                501,
                [5, 5, 4],
                format!("Duplicate parameter: {key}"),
            ));
        }
        seen.push(key.clone());
        Ok((key, value, param))
    })
}

fn mail(args: &str) -> Result<MailFrom, Reply> {
    let path = after_keyword(args, "FROM:").ok_or_else(|| syntax("MAIL FROM:<address>"))?;
    let bad_sender = || Reply::new(501, [5, 1, 7], "Bad sender address syntax");
    let (address, rest) = parse_path(path).ok_or_else(bad_sender)?;
    let mut mail = MailFrom {
        address: address.to_string(),
        ..MailFrom::default()
    };
    for param in keyed(params(rest).ok_or_else(bad_sender)?) {
        let (key, value, param) = param?;
        match (key.as_str(), value) {
            ("SIZE", Some(value)) => mail.size = Some(size(value)?),
            ("SIZE", None) => return Err(bad_size()),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => mail.eight_bit = false,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => mail.eight_bit = true,
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            ("SMTPUTF8", Some(_)) => {
                return Err(Reply::new(501, [5, 5, 4], "Bad SMTPUTF8 parameter syntax"));
            }
            ("REQUIRETLS", None) => mail.requiretls = true,
            ("REQUIRETLS", Some(_)) => {
                return Err(Reply::new(
                    501,
                    [5, 5, 4],
                    "Bad REQUIRETLS parameter syntax",
                ));
            }
            ("RET", value) => mail.dsn.ret = Some(dsn::ret(value)?),
            ("ENVID", value) => mail.dsn.envid = Some(dsn::envid(value)?),
            _ => return Err(unsupported(param)),
        }
    }
    Ok(mail)
}

fn bad_size() -> Reply {
    Reply::new(501, [5, 5, 4], "Bad message size syntax")
}

/// 1*20DIGIT (RFC 1870); values beyond `u64` saturate, they are over any limit anyway.
fn size(value: &str) -> Result<u64, Reply> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_size());
    }
    Ok(value.parse().unwrap_or(u64::MAX))
}

fn rcpt(args: &str) -> Result<RcptTo, Reply> {
    let path = after_keyword(args, "TO:").ok_or_else(|| syntax("RCPT TO:<address>"))?;
    let bad_recipient = || Reply::new(501, [5, 1, 3], "Bad recipient address syntax");
    let (address, rest) = parse_path(path).ok_or_else(bad_recipient)?;
    if address.is_empty() {
        return Err(bad_recipient());
    }
    let mut rcpt = RcptTo {
        address: address.to_string(),
        dsn: RcptDsn::default(),
    };
    for param in keyed(params(rest).ok_or_else(bad_recipient)?) {
        let (key, value, param) = param?;
        match key.as_str() {
            "NOTIFY" => rcpt.dsn.notify = Some(dsn::notify(value)?),
            "ORCPT" => rcpt.dsn.orcpt = Some(dsn::orcpt(value)?),
            _ => return Err(unsupported(param)),
        }
    }
    Ok(rcpt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        match parse(line.as_bytes()) {
            Ok(command) => command,
            Err(reply) => panic!("{line:?} -> {reply}"),
        }
    }

    fn err(line: &[u8]) -> String {
        match parse(line) {
            Ok(command) => panic!("{line:?} -> {command:?}"),
            Err(reply) => reply.to_string(),
        }
    }

    #[test]
    fn parses_each_command_case_insensitively() {
        assert_eq!(ok("ehlo client.test"), Command::Ehlo("client.test".into()));
        assert_eq!(
            ok("HELO  [192.0.2.1] "),
            Command::Helo("[192.0.2.1]".into())
        );
        assert_eq!(
            ok("Rcpt To:<b@x.test>"),
            Command::Rcpt(RcptTo {
                address: "b@x.test".into(),
                ..RcptTo::default()
            })
        );
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("rset"), Command::Rset);
        assert_eq!(ok("NOOP anything at all"), Command::Noop);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("VRFY bob"), Command::Vrfy);
        assert_eq!(ok("HELP"), Command::Help);
        assert_eq!(ok("StartTLS"), Command::StartTls);
        assert_eq!(ok("EXPN staff"), Command::NotImplemented);
        assert_eq!(ok("GET / HTTP/1.1"), Command::Forbidden);
    }

    #[test]
    fn parses_bdat() {
        let bdat = |size, last| Command::Bdat { size, last };
        assert_eq!(ok("BDAT 10 LAST"), bdat(10, true));
        assert_eq!(ok("bdat 0 last"), bdat(0, true));
        assert_eq!(ok("BDAT 65536"), bdat(65536, false));
        assert_eq!(ok("BDAT 007"), bdat(7, false));
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT +5",
            "BDAT 5 FIRST",
            "BDAT 5 LAST more",
            "BDAT 5  LAST",
            "BDAT 99999999999999999999999",
        ] {
            let reply = parse(bad.as_bytes()).unwrap_err();
            assert_eq!(
                reply.to_string(),
                "501 5.5.4 Syntax: BDAT chunk-size [LAST]",
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_mail_parameters() {
        let mail = ok("MAIL FROM: <a@x.test> size=1000 BODY=8bitmime SMTPUTF8 requiretls");
        assert_eq!(
            mail,
            Command::Mail(MailFrom {
                address: "a@x.test".into(),
                size: Some(1000),
                eight_bit: true,
                smtputf8: true,
                dsn: MailDsn::default(),
                requiretls: true,
            })
        );
        let null = ok("MAIL FROM:<> BODY=7BIT SIZE=99999999999999999999");
        assert_eq!(
            null,
            Command::Mail(MailFrom {
                size: Some(u64::MAX),
                ..MailFrom::default()
            })
        );
    }

    #[test]
    fn rejects_bad_syntax_with_specific_replies() {
        for (line, reply) in [
            (&b""[..], "500 5.5.2 Error: command not recognized"),
            (b"FOO bar", "500 5.5.2 Error: command not recognized"),
            (b"\xff\xfe", "500 5.5.2 Error: command not recognized"),
            (b"QUIT\x00", "500 5.5.2 Error: command not recognized"),
            (b"EHLO", "501 5.5.4 Syntax: EHLO hostname"),
            (b"HELO   ", "501 5.5.4 Syntax: HELO hostname"),
            (
                b"EHLO a\x00b",
                "501 5.5.4 Error: invalid characters in command",
            ),
            (
                b"NOOP \xc3\x28",
                "501 5.5.4 Error: invalid characters in command",
            ),
            (b"DATA now", "501 5.5.4 Syntax: DATA"),
            (b"RSET x", "501 5.5.4 Syntax: RSET"),
            (b"QUIT now", "501 5.5.4 Syntax: QUIT"),
            (b"STARTTLS x", "501 5.5.4 Syntax: STARTTLS"),
            (b"VRFY", "501 5.5.4 Syntax: VRFY address"),
            (b"MAIL <a@x.test>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
            (b"MAIL FROM:a@x.test", "501 5.1.7 Bad sender address syntax"),
            (
                b"MAIL FROM:<a@x.test>SIZE=1",
                "501 5.1.7 Bad sender address syntax",
            ),
            (
                b"MAIL FROM:<a@x.test> SIZE=",
                "501 5.5.4 Bad message size syntax",
            ),
            (
                b"MAIL FROM:<a@x.test> SIZE=1k",
                "501 5.5.4 Bad message size syntax",
            ),
            (
                b"MAIL FROM:<a@x.test> SIZE",
                "501 5.5.4 Bad message size syntax",
            ),
            (
                b"MAIL FROM:<a@x.test> SMTPUTF8=yes",
                "501 5.5.4 Bad SMTPUTF8 parameter syntax",
            ),
            (
                b"MAIL FROM:<a@x.test> REQUIRETLS=YES",
                "501 5.5.4 Bad REQUIRETLS parameter syntax",
            ),
            (
                b"MAIL FROM:<a@x.test> REQUIRETLS REQUIRETLS",
                "501 5.5.4 Duplicate parameter: REQUIRETLS",
            ),
            (
                b"MAIL FROM:<a@x.test> BODY=BINARYMIME",
                "555 5.5.4 Unsupported option: BODY=BINARYMIME",
            ),
            (
                b"MAIL FROM:<a@x.test> SIZE=1 size=2",
                "501 5.5.4 Duplicate parameter: SIZE",
            ),
            (
                b"MAIL FROM:<a@x.test> MT-PRIORITY=3",
                "555 5.5.4 Unsupported option: MT-PRIORITY=3",
            ),
            (b"RCPT <b@x.test>", "501 5.5.4 Syntax: RCPT TO:<address>"),
            (b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
            (b"RCPT TO:<b@>", "501 5.1.3 Bad recipient address syntax"),
            (
                b"RCPT TO:<b@x.test> FOO=BAR",
                "555 5.5.4 Unsupported option: FOO=BAR",
            ),
        ] {
            assert_eq!(err(line), reply, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn parses_dsn_parameters() {
        let Command::Mail(mail) = ok("MAIL FROM:<a@x.test> ret=hdrs ENVID=QQ+2B1") else {
            panic!("not MAIL");
        };
        assert_eq!(mail.dsn.ret, Some(dsn::Ret::Hdrs));
        assert_eq!(mail.dsn.envid.as_deref(), Some("QQ+1"));
        let Command::Rcpt(rcpt) =
            ok("RCPT TO:<b@x.test> notify=success,Delay orcpt=rfc822;B+2Bx@x.test")
        else {
            panic!("not RCPT");
        };
        let notify = rcpt.dsn.notify.expect("notify");
        assert!(notify.success && notify.delay && !notify.failure);
        let orcpt = rcpt.dsn.orcpt.expect("orcpt");
        assert_eq!(
            (orcpt.addr_type.as_str(), orcpt.address.as_str()),
            ("rfc822", "B+x@x.test")
        );
        let Command::Rcpt(never) = ok("RCPT TO:<b@x.test> NOTIFY=NEVER") else {
            panic!("not RCPT");
        };
        assert_eq!(never.dsn.notify, Some(dsn::Notify::NEVER));
    }

    #[test]
    fn rejects_malformed_or_repeated_dsn_parameters() {
        let ret = "501 5.5.4 Bad RET parameter syntax: FULL or HDRS";
        let envid =
            "501 5.5.4 Bad ENVID parameter syntax: xtext of at most 100 printable characters";
        let notify =
            "501 5.5.4 Bad NOTIFY parameter syntax: NEVER or a list of SUCCESS, FAILURE, DELAY";
        let orcpt =
            "501 5.5.4 Bad ORCPT parameter syntax: addr-type;xtext, e.g. rfc822;user@example.com";
        let long = format!("MAIL FROM:<a@x.test> ENVID={}", "x".repeat(101));
        for (line, reply) in [
            ("MAIL FROM:<a@x.test> RET=BODY", ret),
            ("MAIL FROM:<a@x.test> RET", ret),
            ("MAIL FROM:<a@x.test> ENVID=a=b", envid),
            ("MAIL FROM:<a@x.test> ENVID=a+0D+0A", envid),
            ("MAIL FROM:<a@x.test> ENVID=", envid),
            (long.as_str(), envid),
            (
                "MAIL FROM:<a@x.test> RET=FULL RET=HDRS",
                "501 5.5.4 Duplicate parameter: RET",
            ),
            (
                "MAIL FROM:<a@x.test> ENVID=a envid=b",
                "501 5.5.4 Duplicate parameter: ENVID",
            ),
            ("RCPT TO:<b@x.test> NOTIFY=NEVER,SUCCESS", notify),
            ("RCPT TO:<b@x.test> NOTIFY=SOMETIMES", notify),
            ("RCPT TO:<b@x.test> NOTIFY", notify),
            ("RCPT TO:<b@x.test> ORCPT=b@x.test", orcpt),
            ("RCPT TO:<b@x.test> ORCPT=rfc822;b+4", orcpt),
            (
                "RCPT TO:<b@x.test> NOTIFY=DELAY notify=FAILURE",
                "501 5.5.4 Duplicate parameter: NOTIFY",
            ),
            (
                "RCPT TO:<b@x.test> ORCPT=rfc822;b@x.test ORCPT=rfc822;c@x.test",
                "501 5.5.4 Duplicate parameter: ORCPT",
            ),
        ] {
            assert_eq!(err(line.as_bytes()), reply, "{line}");
        }
    }
}
