//! The reader's side of the licensing service: one `POST /v1/use-license` over HTTPS. The
//! server is verified against the given CA certificates (or the public web roots), the reader
//! proves who it is with its S/MIME certificate and key as the TLS client certificate, or, as
//! one of the tenant's own users, with its name and password (HTTP Basic) and its own public
//! key to wrap to, and the answer is bounded in time and size. Only a JSON `200` yields a use license; any other answer
//! is a refusal carrying the service's `error` code and `reason`.
//!
//! Nothing here trusts the answer: the caller verifies the use license (signature by the tenant
//! key the message names, principal, validity) before using it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::service::USE_LICENSE_PATH;
use crate::auth::Credentials;
use crate::tls::policy::TrustAnchors;
use crate::tls::CertifiedKey;

/// Time to connect and complete the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the whole exchange, connection included.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read, in bytes (a use license is at most 16 KiB, base64 and a PEM key).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Why no use license came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The licensing URL cannot be used.
    #[error("licensing URL {url:?}: {problem}")]
    Url { url: String, problem: String },
    /// The CA file or the reader's certificate and key cannot be used.
    #[error("{0}")]
    Setup(String),
    /// No exchange: name resolution, connection, TLS (including server verification), timeout.
    #[error("licensing service {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The service answered with a refusal.
    #[error("the licensing service refused: {reason} ({code})")]
    Refused {
        status: u16,
        code: String,
        reason: String,
    },
    /// The service answered something that is not a use license nor a refusal.
    #[error("licensing service {url}: unexpected answer: {reason}")]
    BadAnswer { url: String, reason: String },
}

/// A licensing service URL split for the request: `https://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUrl {
    /// The URL as given.
    pub url: String,
    /// A DNS name (lower case) or an IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// The path prefix, without a trailing `/` (empty for none).
    pub prefix: String,
}

impl ServiceUrl {
    /// Parses an `https://` URL: no user info, query or fragment; port 443 unless given.
    pub fn parse(url: &str) -> Result<ServiceUrl, ClientError> {
        let bad = |problem: &str| ClientError::Url {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        if let Some(problem) = crate::crypto::rms::licensing_url_problem(url) {
            return Err(bad(problem));
        }
        let rest = &url["https://".len()..];
        if rest.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(bad("not an IPv6 address in brackets"));
                }
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        };
        let host = host.to_ascii_lowercase();
        if ServerName::try_from(host.as_str()).is_err() {
            return Err(bad("not a host name or IP address"));
        }
        Ok(ServiceUrl {
            url: url.to_string(),
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The path of the use-license endpoint: the prefix followed by `/v1/use-license`.
    pub fn endpoint(&self) -> String {
        format!("{}{USE_LICENSE_PATH}", self.prefix)
    }

    /// The `Host` header value.
    pub(super) fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// What the service granted (not yet verified).
#[derive(Clone, Debug)]
pub struct Answer {
    /// The use license, in its wire form.
    pub use_license: Vec<u8>,
    /// The tenant public key (PEM) the service says it signed with.
    pub tenant_key: String,
    pub principal: String,
    pub rights: Vec<String>,
    pub valid_until: String,
}

/// The client TLS configuration: TLS 1.2+, the server verified against `ca` (PEM CA
/// certificates) or the public web roots, and `identity` presented as the client certificate.
pub fn client_config(
    ca: Option<&Path>,
    identity: &CertifiedKey,
) -> Result<Arc<ClientConfig>, ClientError> {
    tls_config(ca, Some(identity))
}

/// As [`client_config`], with no client certificate: for a reader proving itself by password.
pub fn password_client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, ClientError> {
    tls_config(ca, None)
}

fn tls_config(
    ca: Option<&Path>,
    identity: Option<&CertifiedKey>,
) -> Result<Arc<ClientConfig>, ClientError> {
    let anchors = match ca {
        Some(path) => {
            crate::tls::load_trust_anchors(path).map_err(|e| ClientError::Setup(e.to_string()))?
        }
        None => TrustAnchors::system(),
    };
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&versions)
        .map_err(|e| ClientError::Setup(format!("TLS configuration: {e}")))?
        .with_root_certificates(anchors.roots);
    let mut config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| ClientError::Setup(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A reader proving itself with a password: its `[[user]]` name and password, and its own RSA
/// public key (PEM `PUBLIC KEY`) for the content key to be wrapped to.
#[derive(Clone, Debug)]
pub struct PasswordProof {
    pub credentials: Credentials,
    pub reader_key_pem: String,
}

/// Asks the service at `url` for a use license for the publishing license `license` (with its
/// `signature`), within `EXCHANGE_TIMEOUT`.
pub async fn request_use_license(
    url: &ServiceUrl,
    tls: Arc<ClientConfig>,
    license: &[u8],
    signature: &[u8],
) -> Result<Answer, ClientError> {
    request_use_license_as(url, tls, license, signature, None).await
}

/// As [`request_use_license`]; with `password`, the reader proves itself by password (and
/// `tls` should present no client certificate: see [`password_client_config`]).
pub async fn request_use_license_as(
    url: &ServiceUrl,
    tls: Arc<ClientConfig>,
    license: &[u8],
    signature: &[u8],
    password: Option<&PasswordProof>,
) -> Result<Answer, ClientError> {
    let reader_key = password.map(|p| p.reader_key_pem.as_str());
    let body = request_body(license, signature, reader_key);
    let authorization = password
        .map(|p| basic_authorization(&p.credentials))
        .transpose()?;
    let exchange = exchange(url, tls, body, authorization);
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(
            url,
            format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs()),
        )),
    }
}

pub(super) fn unreachable(url: &ServiceUrl, reason: impl Into<String>) -> ClientError {
    ClientError::Unreachable {
        url: url.url.clone(),
        reason: reason.into(),
    }
}

fn bad_answer(url: &ServiceUrl, reason: impl Into<String>) -> ClientError {
    ClientError::BadAnswer {
        url: url.url.clone(),
        reason: reason.into(),
    }
}

/// The JSON body of a use-license request; `reader_key` for a reader proven by password.
pub(super) fn request_body(license: &[u8], signature: &[u8], reader_key: Option<&str>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = serde_json::json!({
        "license": b64.encode(license),
        "signature": b64.encode(signature),
    });
    if let Some(key) = reader_key {
        body["reader_key"] = key.into();
    }
    body.to_string()
}

/// `Authorization: Basic` for a user's credentials, marked sensitive (never logged by hyper).
fn basic_authorization(credentials: &Credentials) -> Result<HeaderValue, ClientError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pair = format!("{}:{}", credentials.username, credentials.password);
    let mut value = HeaderValue::try_from(format!("Basic {}", b64.encode(pair)))
        .map_err(|_| ClientError::Setup("the user name cannot be sent".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A TLS connection to the service, within `CONNECT_TIMEOUT`.
pub(super) async fn connect(
    url: &ServiceUrl,
    tls: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| unreachable(url, "not a host name or IP address"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| unreachable(url, e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(url, format!("TLS: {e}")))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| {
            unreachable(
                url,
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            )
        })?
}

/// The `POST` of `body` to the service's endpoint.
pub(super) fn build_request(
    url: &ServiceUrl,
    body: String,
    authorization: Option<HeaderValue>,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let mut request = Request::builder().method(Method::POST);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request
        .uri(url.endpoint())
        .header(header::HOST, url.authority())
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| unreachable(url, format!("HTTP request: {e}")))
}

/// Reads an answer (at most `MAX_ANSWER` bytes) into a use license or a refusal.
pub(super) async fn read_answer(
    url: &ServiceUrl,
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Answer, ClientError> {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| bad_answer(url, format!("reading the answer: {e}")))?
        .to_bytes();
    interpret(url, status, json, &bytes)
}

async fn exchange(
    url: &ServiceUrl,
    tls: Arc<ClientConfig>,
    body: String,
    authorization: Option<HeaderValue>,
) -> Result<Answer, ClientError> {
    let stream = connect(url, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(url, format!("HTTP: {e}")))?;
    let driver = tokio::spawn(conn);
    let request = build_request(url, body, authorization)?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(url, format!("HTTP: {e}")))?;
        read_answer(url, response).await
    }
    .await;
    driver.abort();
    result
}

/// Turns a status and body into a use license or a refusal.
fn interpret(
    url: &ServiceUrl,
    status: StatusCode,
    json: bool,
    bytes: &[u8],
) -> Result<Answer, ClientError> {
    let value: Option<serde_json::Value> = if json {
        serde_json::from_slice(bytes).ok()
    } else {
        None
    };
    let text = |v: &serde_json::Value, field: &str| v.get(field)?.as_str().map(str::to_string);
    let Some(value) = value else {
        return Err(bad_answer(
            url,
            format!("HTTP {status} without a JSON body"),
        ));
    };
    if status != StatusCode::OK {
        return match (text(&value, "error"), text(&value, "reason")) {
            (code, Some(reason)) => Err(ClientError::Refused {
                status: status.as_u16(),
                code: code.unwrap_or_else(|| status.as_u16().to_string()),
                reason,
            }),
            _ => Err(bad_answer(url, format!("HTTP {status} without a reason"))),
        };
    }
    let field =
        |name: &str| text(&value, name).ok_or_else(|| bad_answer(url, format!("no {name}")));
    let use_license = base64::engine::general_purpose::STANDARD
        .decode(field("use_license")?)
        .map_err(|_| bad_answer(url, "use_license is not base64"))?;
    let rights = value
        .get("rights")
        .and_then(|r| r.as_array())
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Answer {
        use_license,
        tenant_key: field("tenant_key")?,
        principal: field("principal")?,
        rights,
        valid_until: field("valid_until")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_prefix_and_default_to_443() {
        let u = ServiceUrl::parse("https://rms.contoso.test").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("rms.contoso.test", 443));
        assert_eq!(u.endpoint(), "/v1/use-license");
        assert_eq!(u.authority(), "rms.contoso.test");
        let u = ServiceUrl::parse("https://RMS.contoso.test:8443/licensing/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("rms.contoso.test", 8443));
        assert_eq!(u.endpoint(), "/licensing/v1/use-license");
        assert_eq!(u.authority(), "rms.contoso.test:8443");
        let u = ServiceUrl::parse("https://[::1]:9443").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9443));
        assert_eq!(u.authority(), "[::1]:9443");
        let u = ServiceUrl::parse("https://127.0.0.1:9443/x").unwrap();
        assert_eq!(u.endpoint(), "/x/v1/use-license");
        for bad in [
            "http://rms.contoso.test",
            "https://",
            "https://user@rms.contoso.test",
            "https://rms.contoso.test:0",
            "https://rms.contoso.test:99999",
            "https://rms.contoso.test/?q=1",
            "https://[::1",
            "https://bad_host!/",
        ] {
            assert!(ServiceUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_json_200_is_a_use_license() {
        let url = ServiceUrl::parse("https://rms.contoso.test").unwrap();
        let refused =
            br#"{"error":"no-rights","reason":"dave@fabrikam.test has no rights on this message"}"#;
        match interpret(&url, StatusCode::FORBIDDEN, true, refused) {
            Err(ClientError::Refused {
                status,
                code,
                reason,
            }) => {
                assert_eq!((status, code.as_str()), (403, "no-rights"));
                assert_eq!(reason, "dave@fabrikam.test has no rights on this message");
            }
            other => panic!("{other:?}"),
        }
        let ok = br#"{"use_license":"AAEC","tenant_key":"PEM","principal":"bob@fabrikam.test","rights":["VIEW"],"valid_until":"2030-01-01T00:00:00Z"}"#;
        let a = interpret(&url, StatusCode::OK, true, ok).unwrap();
        assert_eq!(a.use_license, [0, 1, 2]);
        assert_eq!(a.rights, ["VIEW"]);
        assert!(matches!(
            interpret(&url, StatusCode::OK, false, ok),
            Err(ClientError::BadAnswer { .. })
        ));
        assert!(matches!(
            interpret(&url, StatusCode::OK, true, b"{}"),
            Err(ClientError::BadAnswer { .. })
        ));
        assert!(matches!(
            interpret(&url, StatusCode::BAD_GATEWAY, true, b"<html>"),
            Err(ClientError::BadAnswer { .. })
        ));
    }
}
