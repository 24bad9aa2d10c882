//! SMTP AUTH (RFC 4954, PLAIN RFC 4616, LOGIN) inside the session: the dialogue and decoding.
//! Checking the password is the caller's job (`Action::Authenticate`), off the async reactor.

use base64::Engine;

use super::{Action, Out, Session, State};
pub use crate::auth::Credentials;
use crate::mail::Reply;

/// Which base64 line the session waits for after a 334.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AuthStep {
    PlainResponse,
    LoginUser,
    LoginPass { user: String },
}

fn decode(b64: &str) -> Result<Vec<u8>, Reply> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| {
            Reply::new(
                501,
                [5, 5, 2],
                "Error: cannot decode the authentication response",
            )
        })
}

fn text(bytes: Vec<u8>) -> Result<String, Reply> {
    String::from_utf8(bytes)
        .map_err(|_| Reply::new(501, [5, 5, 2], "Error: authentication data is not UTF-8"))
}

/// PLAIN: `authzid NUL authcid NUL passwd`; an authzid other than the user is refused.
fn plain(b64: &str) -> Result<Credentials, Reply> {
    let raw = decode(b64)?;
    let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    let [authz, user, pass] = parts.as_slice() else {
        return Err(Reply::new(
            501,
            [5, 5, 2],
            "Error: malformed PLAIN response",
        ));
    };
    let (authz, username, password) = (
        text(authz.to_vec())?,
        text(user.to_vec())?,
        text(pass.to_vec())?,
    );
    if !authz.is_empty() && authz != username {
        return Err(failed());
    }
    Ok(Credentials { username, password })
}

fn failed() -> Reply {
    Reply::new(535, [5, 7, 8], "Error: authentication failed")
}

impl Session {
    /// AUTH: only where offered (submission listeners), only over TLS, once, outside a transaction.
    pub(super) fn auth(&mut self, mechanism: String, initial: Option<String>, out: &mut Out) {
        if !self.config.auth {
            return self.reject(
                Reply::new(502, [5, 5, 1], "Error: command not implemented"),
                out,
            );
        }
        if !self.is_tls() {
            let reply = Reply::new(
                538,
                [5, 7, 11],
                "Encryption required for requested authentication mechanism",
            );
            return self.reject(reply, out);
        }
        if self.facts.authenticated.is_some() {
            return self.reject(
                Reply::new(503, [5, 5, 1], "Error: already authenticated"),
                out,
            );
        }
        if self.envelope.is_some() {
            return self.reject(
                Reply::new(503, [5, 5, 1], "Error: MAIL transaction in progress"),
                out,
            );
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(b64)) if b64 != "=" => self.auth_check(plain(&b64), out),
            ("PLAIN", _) => self.auth_prompt(AuthStep::PlainResponse, "", out),
            ("LOGIN", Some(b64)) => match decode(&b64).and_then(text) {
                Ok(user) => self.auth_prompt(AuthStep::LoginPass { user }, "UGFzc3dvcmQ6", out),
                Err(reply) => self.reject(reply, out),
            },
            ("LOGIN", None) => self.auth_prompt(AuthStep::LoginUser, "VXNlcm5hbWU6", out),
            _ => self.reject(
                Reply::new(
                    504,
                    [5, 5, 4],
                    "Error: unsupported authentication mechanism",
                ),
                out,
            ),
        }
    }

    fn auth_prompt(&mut self, step: AuthStep, challenge: &str, out: &mut Out) {
        out.reply(&Reply::bare(334, challenge));
        self.state = State::AuthLine(step);
    }

    /// One base64 line in answer to a 334.
    pub(super) fn auth_line(&mut self, step: AuthStep, line: &[u8], out: &mut Out) {
        self.state = State::Command;
        if line == b"*" {
            return self.reject(Reply::new(501, [5, 0, 0], "Authentication aborted"), out);
        }
        let line = String::from_utf8_lossy(line);
        match step {
            AuthStep::PlainResponse => self.auth_check(plain(&line), out),
            AuthStep::LoginUser => match decode(&line).and_then(text) {
                Ok(user) => self.auth_prompt(AuthStep::LoginPass { user }, "UGFzc3dvcmQ6", out),
                Err(reply) => self.reject(reply, out),
            },
            AuthStep::LoginPass { user } => {
                let creds = decode(&line).and_then(text).map(|password| Credentials {
                    username: user,
                    password,
                });
                self.auth_check(creds, out)
            }
        }
    }

    fn auth_check(&mut self, creds: Result<Credentials, Reply>, out: &mut Out) {
        match creds {
            Ok(c) => {
                out.0.push(Action::Authenticate(c));
                self.state = State::AwaitAuth;
            }
            Err(reply) => self.reject(reply, out),
        }
    }

    /// The caller's verdict on an `Authenticate`: the user name, or the reply to give. Then
    /// carries on with input buffered meanwhile. Ignored unless a check is pending.
    pub fn auth_result(&mut self, result: Result<String, Reply>) -> Vec<Action> {
        if !matches!(self.state, State::AwaitAuth) {
            return Vec::new();
        }
        let mut out = Out::default();
        self.state = State::Command;
        match result {
            Ok(user) => {
                self.facts.authenticated = Some(user);
                // Authenticated users may relay (RFC 6409 submission).
                self.facts.relay_allowed = true;
                out.reply(&Reply::new(235, [2, 7, 0], "Authentication successful"));
            }
            Err(reply) => self.reject(reply, &mut out),
        }
        self.process(&mut out);
        out.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decodes_and_checks_the_authzid() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"\0alice@contoso.test\0s3cret");
        let c = plain(&b64).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice@contoso.test", "s3cret")
        );
        let other = base64::engine::general_purpose::STANDARD.encode(b"bob\0alice\0pw");
        assert_eq!(plain(&other).unwrap_err().code, 535);
        assert_eq!(plain("not base64!").unwrap_err().code, 501);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "passwords never reach Debug output"
        );
    }
}
