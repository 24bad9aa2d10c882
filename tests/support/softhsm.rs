//! A real SoftHSM2 token for the PKCS#11 tests: a temporary token directory, `SOFTHSM2_CONF`
//! set for this process and its children, and a token "sealpost" (user PIN 1234) initialised
//! with `softhsm2-util`. Without SoftHSM2 the tests say why they skip; under `CI` they fail.
//! SoftHSM2's file store is not safe for processes writing one token at once (its integrity
//! check then fails and the token is not found), so each test holds the token for its whole run.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const TOKEN: &str = "sealpost";
pub const PIN: &str = "1234";

pub struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A 0600 file holding the user PIN.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("user.pin")
    }

    /// The `[pkcs11]` settings for this token.
    pub fn config(&self) -> sealpost::keys::Pkcs11Config {
        sealpost::keys::Pkcs11Config {
            module: MODULE.into(),
            pin: sealpost::keys::PinSource::File(self.pin_file()),
        }
    }
}

/// The shared token, held by one test at a time.
pub struct Token {
    hsm: &'static SoftHsm,
    _turn: MutexGuard<'static, ()>,
}

impl Deref for Token {
    type Target = SoftHsm;
    fn deref(&self) -> &SoftHsm {
        self.hsm
    }
}

/// The shared token, once the tests before have let it go, or `None` (after saying why) when
/// SoftHSM2 is not installed.
pub fn softhsm() -> Option<Token> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let hsm = HSM.get_or_init(init).as_ref()?;
    // A test that failed while holding the token leaves it as usable as before.
    let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Some(Token { hsm, _turn: turn })
}

fn init() -> Option<SoftHsm> {
    let util = Command::new("softhsm2-util").arg("--version").output();
    if !Path::new(MODULE).is_file() || util.is_err() {
        let why = format!(
            "SoftHSM2 is not installed ({MODULE} or softhsm2-util missing): \
             apt-get install softhsm2 opensc (.ci/run does)"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("skipping the PKCS#11 tests: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // Before any module is loaded in this process; children inherit it.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", TOKEN])
        .args(["--pin", PIN, "--so-pin", "5678"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hsm = SoftHsm { dir };
    write_private(&hsm.pin_file(), &format!("{PIN}\n"));
    Some(hsm)
}

/// Writes a file with mode 0600.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
