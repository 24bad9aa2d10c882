//! What `openssl speed` measures on this machine, on one core: the bounds the crypto benches
//! compare with. `None` when openssl is missing or its output is not understood.

/// RSA-2048 signs and verifies (private and public operations) per second, from
/// `openssl speed -seconds SECONDS rsa2048`.
pub fn rsa2048(seconds: u32) -> Option<(f64, f64)> {
    let text = run(&["speed", "-seconds", &seconds.to_string(), "rsa2048"])?;
    let line = text.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse::<f64>().ok())
        .collect();
    // "rsa 2048 bits 0.000329s 0.000020s 3039.1 50335.9": the last two are per second.
    match fields[..] {
        [.., sign, verify] if sign > 0.0 && verify > 0.0 => Some((sign, verify)),
        _ => None,
    }
}

/// Bytes per second of `cipher` (e.g. "aes-256-cbc") encrypting 16384-byte blocks, from
/// `openssl speed -seconds SECONDS -bytes 16384 -evp CIPHER` (that block size alone).
pub fn evp_bytes_per_s(cipher: &str, seconds: u32) -> Option<f64> {
    let seconds = seconds.to_string();
    let args = [
        "speed", "-seconds", &seconds, "-bytes", "16384", "-evp", cipher,
    ];
    let text = run(&args)?;
    evp_line(&text, cipher)
}

fn evp_line(text: &str, cipher: &str) -> Option<f64> {
    // "AES-256-CBC  1018.9k ... 1290115.75k": thousands of bytes per second, the 16384-byte
    // column last.
    let line = text.lines().find(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(cipher))
    })?;
    let last = line.split_whitespace().last()?;
    let thousands: f64 = last.strip_suffix('k')?.parse().ok()?;
    (thousands > 0.0).then_some(thousands * 1000.0)
}

fn run(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_16384_byte_column() {
        let text = "The 'numbers' are in 1000s of bytes per second processed.\n\
            type             16 bytes     64 bytes    256 bytes   1024 bytes   8192 bytes  16384 bytes\n\
            AES-256-GCM      34357.30k   133671.02k   485755.73k  1320926.92k  3658920.66k  3447485.37k\n";
        assert_eq!(evp_line(text, "aes-256-gcm"), Some(3_447_485_370.0));
        assert_eq!(evp_line(text, "aes-256-cbc"), None);
        let one_size = "type          16384 bytes\nAES-256-CBC    1203321.96k\n";
        assert_eq!(evp_line(one_size, "aes-256-cbc"), Some(1_203_321_960.0));
    }
}
