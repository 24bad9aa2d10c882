//! `sealpost decrypt`: open an S/MIME encrypted message with a private key, an RMS-style
//! protected message as its reader through the licensing service (`--identity`), or with a
//! tenant key, without any server.

mod cache;
pub(super) mod reader;
mod reader_key;
mod signature;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use zeroize::Zeroizing;

use std::time::SystemTime;

use crate::crypto::rms::{self, Rights, RmsError, TenantKeys};
use crate::crypto::smime::{decrypt_message, is_encrypted, is_signed, DecryptError, DecryptKey};

const LONG_ABOUT: &str = "\
Decrypt an S/MIME encrypted message (application/pkcs7-mime; smime-type=enveloped-data or
authEnveloped-data) and write the original message: the outer routing header fields (From, To,
Subject, Date, Received, ...) followed by the decrypted entity (its Content-* fields and body),
ready for any mail reader. A bare .p7m file (DER, BER or PEM) gives the decrypted entity alone.

SIGNATURES
  A signed message (multipart/signed with application/pkcs7-signature, or signed-data), and
  the signed message inside an encrypted one (sign-then-encrypt), has its signature verified;
  a signed-only message needs no key. Standard error says who signed (the certificate's subject
  and email addresses, the signing time) and whether the signer is trusted:
    signature: good, signed by EMAIL=alice@contoso.test,CN=alice@contoso.test <alice@contoso.test> at 2026-...
    signer: trusted (the certificate chains to ca.crt)
  --trust CA.pem|DIR gives the CA certificates a signer must chain to (PEM; a directory's
  *.crt and *.pem files); the chain is checked at the current time and, when the certificate
  restricts its use, for email protection. With --trust, an untrusted signer ends with 18 and
  nothing is written. Without --trust the signer is reported as untrusted (not checked) and the
  message is written. A signature that does not verify (a signed byte or the signature
  altered) always ends with 17 and nothing is written. Signatures with SHA-256/384/512 and RSA
  (PKCS#1 v1.5 or PSS) or ECDSA (P-256, P-384) are checked; SHA-1 ones are refused (8). A
  From address the signer's certificate does not name is warned about.

Messages from sealpost and OpenSSL (including -stream output) open, as do other clients' that
use these algorithms: RSA key transport with OAEP (SHA-1/256/384/512) or PKCS#1 v1.5; content in
AES-128/192/256-CBC (EnvelopedData) or AES-GCM (AuthEnvelopedData). RSA decryption is done in
constant time by aws-lc-rs. 3DES and RC2 content is refused as unsupported.

KEYS
  --key KEY.pem takes an unencrypted RSA key in PEM (\"PRIVATE KEY\" or \"RSA PRIVATE KEY\") or
  DER. With --cert (or a certificate in the key file) the message's recipient list is matched
  against the certificate: a message for someone else is reported as such, and a message for
  you that does not decrypt is reported as altered. Without a certificate the key is tried on
  every recipient of its size, and a failure cannot say whether the key is wrong or the message
  damaged (RFC 3218: no padding oracle).
  --pkcs12 FILE takes a PKCS#12 (.p12/.pfx) file protected with PBES2/AES, as OpenSSL 3 and
  current Windows write it; its password is the first line of --password-file (empty if not
  given). The certificate inside is used like --cert.

PROTECTED MESSAGES (READERS)
  --identity CERT.pem --key KEY.pem is how readers open a protected message: the licensing
  service its publishing license names (version 2) is asked over HTTPS for a use license, the
  reader proving who it is with its S/MIME certificate and key as TLS client certificate. The
  service's certificate is verified against --ca CA.pem, or the public web roots without it.
  The use license must be signed by the tenant key the message names, be for the certificate's
  email address and still be valid; the content key in it opens with KEY.pem. The rights
  granted and where the use license came from go to standard error; a refusal gives the
  service's reason (\"revoked on ...\", \"expired on ...\", \"... has no rights on this message\").
  Use licenses are cached, one file per message and reader (mode 0600, in a 0700 directory):
  --license-cache DIR, else $XDG_CACHE_HOME/sealpost/licenses, else
  $HOME/.cache/sealpost/licenses. A cached use license that verifies and has not expired opens
  the message without any network; an unusable one is ignored and replaced. An S/MIME message
  given with --identity opens as with --cert.
  --user NAME --service URL is the same for the tenant's own users, with their [[user]] password
  instead of a certificate: the password (first line of --password-file, else SEALPOST_PASSWORD)
  goes only to the service given with --service, and a message naming another service is
  refused before anything is sent (a message cannot send your password elsewhere). The use
  license is wrapped to --key KEY.pem, or to a key made on first use beside the cache
  (<cache>/keys/, RSA-2048, mode 0600). A cached use license opens the message without the
  password or the network.

PROTECTED MESSAGES (ADMINISTRATORS)
  --tenant-key is the administrators' super-user path: it needs the tenant's private key and
  opens any protected message, whatever its rights. --tenant-key FILE|DIR opens a protected
  message (attachment message.sealed) or a bare container with a tenant key, or with the key a
  directory holds under the message's key id. The license signature (RSA-PSS-SHA256), the key
  id and the ciphertext digest are checked before anything is decrypted. The license summary
  (issuer, template, rights per principal, expiry) goes to standard error. An expired license
  is refused unless --ignore-expiry is given. --as ADDR checks that ADDR holds the VIEW right
  and says which rights it has.

OUTPUT
  The message goes to standard output, or with --out to FILE (mode 0600), written to a
  temporary file first and renamed into place. On any error nothing is written.";

const AFTER_LONG_HELP: &str = "\
EXIT STATUS
  0  decrypted
  1  input, output or other I/O error
  2  usage error
  3  not encrypted: the input is not an S/MIME encrypted message
  4  not for this key: the message is encrypted for other recipients (they are listed)
  5  wrong key: the key does not open the message (or, without --cert, it is damaged)
  6  altered: the message names this key but its content does not decrypt or authenticate
  7  corrupted or truncated input (bad base64 or CMS structure)
  8  unsupported algorithm (e.g. 3DES or RC2 content, legacy PKCS#12)
  9  key, certificate or PKCS#12 file unusable (unreadable, wrong password, mismatched), or
     --trust unreadable
 10  protected message: integrity check failed (license, signature or ciphertext altered)
 11  protected message: protected with another tenant key (both key ids are named)
 12  protected message: the license has expired (the date is given)
 13  protected message: the --as address does not hold VIEW
 14  protected message: the licensing service refused a use license (its reason is given)
 15  protected message: the licensing service is unreachable (network, TLS verification of the
     service, timeout, or an answer that is neither a use license nor a refusal)
 16  protected message: it names another licensing service than --service (password not sent)
 17  bad signature: the signed content or the signature was altered (nothing written)
 18  signer not trusted: with --trust, the signer does not chain to those CAs, or its
     certificate expired or is not for email (nothing written)
  With --identity or --user, a message that names no licensing service ends with 2, and so does
  --user when the service must be asked and no password was given.

EXAMPLES
  sealpost decrypt message.eml --key bob.key --cert bob.crt > clear.eml
  sealpost decrypt signed.eml --trust ca.crt > /dev/null
  sealpost decrypt signed-and-encrypted.eml --key bob.key --trust ca.crt > clear.eml
  sealpost decrypt protected.eml --identity bob.crt --key bob.key --ca ca.crt > clear.eml
  SEALPOST_PASSWORD=... sealpost decrypt protected.eml --user carol@contoso.test \\
      --service https://127.0.0.1:8443 --ca ca.crt > clear.eml
  sealpost decrypt --pkcs12 bob.p12 --password-file pw.txt --out clear.eml < message.eml
  openssl cms -encrypt -aes256 -in part.txt bob.crt | sealpost decrypt --key bob.key
  sealpost decrypt --tenant-key fixtures/keys/tenant --as bob@fabrikam.test protected.eml";

/// Arguments of `sealpost decrypt`.
#[derive(Args, Debug)]
#[command(
    about = "Decrypt an S/MIME or RMS-protected message with a private key (through the licensing service) or a tenant key",
    long_about = LONG_ABOUT,
    after_long_help = AFTER_LONG_HELP,
    group = clap::ArgGroup::new("reader").args(["identity", "user"]),
    group = clap::ArgGroup::new("secret").args(["pkcs12", "user"])
)]
pub struct DecryptArgs {
    /// The encrypted message; "-" or nothing reads standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// RSA private key, PEM (PKCS#8 or PKCS#1) or DER (not needed to verify a signed-only
    /// message).
    #[arg(long, value_name = "KEY.pem", conflicts_with_all = ["pkcs12", "tenant_key"])]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM file, or a directory of *.crt / *.pem) that a signer must chain to.
    #[arg(long, value_name = "CA.pem|DIR", conflicts_with = "tenant_key")]
    pub trust: Option<PathBuf>,
    /// The key's certificate (PEM or DER), to match the message's recipients exactly.
    #[arg(long, value_name = "CERT.pem", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Reader: your S/MIME certificate (PEM); with --key, opens a protected message through
    /// the licensing service it names.
    #[arg(
        long,
        value_name = "CERT.pem",
        requires = "key",
        conflicts_with_all = ["tenant_key", "pkcs12", "cert"]
    )]
    pub identity: Option<PathBuf>,
    /// Reader of the tenant's own: your user name; with --service, opens a protected message
    /// through that licensing service with your password instead of a certificate.
    #[arg(
        long,
        value_name = "NAME",
        requires = "service",
        conflicts_with_all = ["tenant_key", "pkcs12", "cert", "identity"]
    )]
    pub user: Option<String>,
    /// With --user: the licensing service you trust with your password (the message must name
    /// this one).
    #[arg(long, value_name = "URL", requires = "user")]
    pub service: Option<String>,
    /// CA certificates (PEM) the licensing service's certificate must chain to (default: the
    /// public web roots).
    #[arg(long, value_name = "CA.pem", requires = "reader")]
    pub ca: Option<PathBuf>,
    /// Directory of cached use licenses (default: $XDG_CACHE_HOME/sealpost/licenses or
    /// $HOME/.cache/sealpost/licenses).
    #[arg(long, value_name = "DIR", requires = "reader")]
    pub license_cache: Option<PathBuf>,
    /// PKCS#12 file holding the key and its certificate, instead of --key.
    #[arg(long, value_name = "FILE", conflicts_with = "tenant_key")]
    pub pkcs12: Option<PathBuf>,
    /// File whose first line is the PKCS#12 password, or with --user your password (else
    /// SEALPOST_PASSWORD).
    #[arg(long, value_name = "F", requires = "secret")]
    pub password_file: Option<PathBuf>,
    /// Administrators: tenant key (PEM) or directory of tenant keys, opening any protected
    /// message (needs the tenant's private key; readers use --identity).
    #[arg(long, value_name = "FILE|DIR")]
    pub tenant_key: Option<PathBuf>,
    /// Open a protected message even after its license expired (says so on standard error).
    #[arg(long, requires = "tenant_key")]
    pub ignore_expiry: bool,
    /// Check that this address holds VIEW in the license, and show its rights.
    #[arg(long = "as", value_name = "ADDR", requires = "tenant_key")]
    pub as_address: Option<String>,
    /// Write the message to FILE instead of standard output (only on success).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs the command: errors of the decryption itself get their own exit codes (see --help);
/// I/O errors are returned and end with exit code 1.
pub fn run(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    if let Some(tenant_key) = &args.tenant_key {
        return run_protected(&args, tenant_key);
    }
    if let (Some(identity), Some(key)) = (&args.identity, &args.key) {
        return reader::run(&args, identity, key);
    }
    if let (Some(user), Some(service)) = (&args.user, &args.service) {
        return reader::run_password(&args, user, service);
    }
    let anchors = match args
        .trust
        .as_deref()
        .map(signature::load_anchors)
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return Ok(fail(&e)),
    };
    let no_key = args.key.is_none() && args.pkcs12.is_none();
    let input = read_input(args.input.as_deref())?;
    if is_signed(&input) && !is_encrypted(&input) {
        return match signature::check(&input, anchors.as_ref()) {
            Ok(message) => {
                write_output(args.out.as_deref(), &message)?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(fail(&e)),
        };
    }
    if no_key {
        eprintln!(
            "sealpost decrypt: give --key KEY.pem or --pkcs12 FILE to decrypt (only a signed, \
             unencrypted message is checked without a key)"
        );
        return Ok(ExitCode::from(2));
    }
    let key = match load_key(&args) {
        Ok(key) => key,
        Err(e) => return Ok(fail(&e)),
    };
    match decrypt_message(&input, &key) {
        Ok(plain) => write_opened(&args, Zeroizing::new(plain)),
        Err(DecryptError::NotEncrypted) if rms::is_protected(&input) => {
            eprintln!(
                "sealpost decrypt: this is an RMS-style protected message: open it with \
                 --identity CERT --key KEY (readers) or --tenant-key FILE|DIR (administrators)"
            );
            Ok(ExitCode::from(DecryptError::NotEncrypted.exit_code()))
        }
        Err(e) => Ok(fail(&e)),
    }
}

/// Writes a decrypted S/MIME message; a signed one only once its signature verified (and, with
/// --trust, its signer is trusted).
fn write_opened(args: &DecryptArgs, plain: Zeroizing<Vec<u8>>) -> anyhow::Result<ExitCode> {
    if !is_signed(&plain) {
        write_output(args.out.as_deref(), &plain)?;
        return Ok(ExitCode::SUCCESS);
    }
    let anchors = match args
        .trust
        .as_deref()
        .map(signature::load_anchors)
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return Ok(fail(&e)),
    };
    match signature::check(&plain, anchors.as_ref()) {
        Ok(message) => {
            write_output(args.out.as_deref(), &Zeroizing::new(message))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(fail(&e)),
    }
}

fn write_output(out: Option<&Path>, plain: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(path) => write_atomically(path, plain),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(plain)
                .and_then(|_| out.flush())
                .context("writing to standard output")
        }
    }
}

fn fail_rms(e: &RmsError) -> ExitCode {
    eprintln!("sealpost decrypt: {e}");
    ExitCode::from(e.exit_code())
}

/// Opens an RMS-style protected message with a tenant key (file or directory).
fn run_protected(args: &DecryptArgs, tenant_key: &Path) -> anyhow::Result<ExitCode> {
    let keys = match TenantKeys::load(tenant_key) {
        Ok(k) => k,
        Err(e) => return Ok(fail_rms(&e)),
    };
    let input = read_input(args.input.as_deref())?;
    let (license, plain) =
        match rms::unprotect(&input, &keys, SystemTime::now(), args.ignore_expiry) {
            Ok(r) => r,
            Err(e) => return Ok(fail_rms(&e)),
        };
    let plain = Zeroizing::new(plain);
    eprint!("{}", license.summary());
    if args.ignore_expiry {
        if let Some(at) = license.expires_at().filter(|at| *at <= SystemTime::now()) {
            eprintln!(
                "warning: the license expired on {}; opened anyway because of --ignore-expiry",
                rms::format_expiry(at)
            );
        }
    }
    if let Some(address) = &args.as_address {
        let rights = license.rights_of(address);
        if !rights.contains(Rights::VIEW) {
            return Ok(fail_rms(&RmsError::NotPermitted {
                address: address.clone(),
                rights,
            }));
        }
        eprintln!("{address} holds: {rights}");
    }
    write_output(args.out.as_deref(), &plain)?;
    Ok(ExitCode::SUCCESS)
}

fn fail(e: &DecryptError) -> ExitCode {
    eprintln!("sealpost decrypt: {e}");
    ExitCode::from(e.exit_code())
}

fn load_key(args: &DecryptArgs) -> Result<DecryptKey, DecryptError> {
    match (&args.key, &args.pkcs12) {
        (Some(key), _) => DecryptKey::from_pem(key, args.cert.as_deref()),
        (None, Some(p12)) => {
            let password = match &args.password_file {
                Some(f) => read_password(f)?,
                None => Zeroizing::new(String::new()),
            };
            DecryptKey::from_pkcs12(p12, &password)
        }
        (None, None) => Err(DecryptError::Key("give --key or --pkcs12".into())),
    }
}

/// A password reader's password: the first line of `file`, else `SEALPOST_PASSWORD`, else
/// none (a cached use license may not need it).
fn user_password(file: Option<&Path>) -> Result<Option<Zeroizing<String>>, DecryptError> {
    match file {
        Some(f) => read_password(f).map(Some),
        None => Ok(std::env::var("SEALPOST_PASSWORD").ok().map(Zeroizing::new)),
    }
}

/// The first line of the file, without its line ending.
fn read_password(path: &Path) -> Result<Zeroizing<String>, DecryptError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| DecryptError::Key(format!("{}: {e}", path.display())))?,
    );
    let line = text.split('\n').next().unwrap_or("");
    Ok(Zeroizing::new(
        line.strip_suffix('\r').unwrap_or(line).to_string(),
    ))
}

fn read_input(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match path {
        None => read_stdin(),
        Some(p) if p == Path::new("-") => read_stdin(),
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
    }
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .context("reading standard input")?;
    Ok(buf)
}

/// Writes `bytes` to a private temporary file beside `path`, syncs it and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\r\nignored\n").unwrap();
        assert_eq!(read_password(&f).unwrap().as_str(), "s3cret");
        std::fs::write(&f, "").unwrap();
        assert_eq!(read_password(&f).unwrap().as_str(), "");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("clear.eml");
        std::fs::write(&out, "old").unwrap();
        write_atomically(&out, b"new").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("missing/x"), b"x").is_err());
    }
}
