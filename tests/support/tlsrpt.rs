//! TLS-RPT (RFC 8460) report messages, read with tools sealpost did not write.

/// Reads a TLS-RPT message as a foreign tool does (Python's email, gzip and json): the parts,
/// the headers, and the report.
pub fn python_read_report(message: &[u8]) -> serde_json::Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let script = r#"
import email, gzip, json, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'))
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'tlsrpt'
parts = [p for p in m.walk() if p.get_content_type() == 'application/tlsrpt+gzip']
assert len(parts) == 1
report = json.loads(gzip.decompress(parts[0].get_payload(decode=True)))
print(json.dumps({'domain': m['TLS-Report-Domain'], 'submitter': m['TLS-Report-Submitter'],
                  'subject': m['Subject'], 'filename': parts[0].get_filename(), 'report': report}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(file.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
