//! Transport rules: the rule model, the loader for `rules/<domain>/*.toml`, and a pure evaluator
//! that turns message + envelope + session facts into actions per recipient.
//!
//! Rules are data; evaluation is pure (no I/O, no clock); cleanup applies the actions.
//!
//! # Rule files
//!
//! One rule per `*.toml` file in the configured directory (`[rules] dir`); other files and
//! hidden files are ignored. Unknown keys are errors. Rules run by `priority` (lower first;
//! ties by file name).
//!
//! ```toml
//! name = "secure-subject-smime"          # unique in the directory
//! description = "optional, for people"
//! priority = 10
//! enabled = true                         # default true
//! stop = false                           # true: no later rule runs for the recipients it matched
//! # (top-level keys must come before the first [table] or [[actions]])
//!
//! [conditions]                           # all must hold; a list holds when any value matches
//! subject_contains = "[secure]"
//! recipient_domain = ["fabrikam.test", "*.fabrikam.test"]
//!
//! [exceptions]                           # any one that holds cancels the rule
//! sender = "newsletter@contoso.test"
//!
//! [[actions]]
//! type = "smime_encrypt"
//! on_missing_certificate = "reject"
//! ```
//!
//! Conditions (the same keys work as exceptions):
//!
//! | key | holds when | per |
//! |---|---|---|
//! | `sender`, `recipient` | address equals one of these, ignoring case | message / recipient |
//! | `sender_domain`, `recipient_domain` | domain is `a.test`, or a subdomain for `*.a.test` | message / recipient |
//! | `sender_pattern`, `recipient_pattern` | address matches a glob | message / recipient |
//! | `recipient_scope` | `"internal"`: domain is a local `[[domain]]`; `"external"`: it is not | recipient |
//! | `subject_contains` | decoded subject contains a text (case-insensitive) | message |
//! | `body_contains` | a decoded text or HTML body part contains a text (case-insensitive) | message |
//! | `header_matches = { name, pattern }` | a header of that name matches the glob | message |
//! | `size_over` | message is larger than bytes (`1048576` or `"10MB"`, units of 1024) | message |
//! | `has_attachment` | message has (true) / has no (false) attachment | message |
//! | `attachment_name_matches` | a part's file name matches a glob (also inside attached messages) | message |
//! | `sender_authenticated` | the client did / did not authenticate | message |
//! | `inbound_connector` | message arrived through this inbound connector | message |
//! | `spf`, `dkim`, `dmarc` | the sender check's result (RFC 8601 name: `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`); never for unchecked mail | message |
//!
//! Conditions are checked envelope and session facts first, then the message content (which is
//! parsed only if a rule needs it); `explain` names the first one that fails in that order.
//!
//! Patterns are globs, not regular expressions: `*` any run of characters, `?` one character,
//! `\` escapes; the whole text must match, case is ignored. Search texts and the searched text
//! are compared lowercase with white space runs folded to one space. `header_matches` sees the
//! unfolded value and, for text headers, the RFC 2047-decoded value.
//!
//! Actions (`type` and options; header text is printable ASCII without CR/LF):
//! `smime_encrypt` (`algorithm` aes256-cbc | aes256-gcm, `key_transport` rsa-oaep | rsa-pkcs1,
//! `on_missing_certificate` reject | deliver-unencrypted | rms-protect), `smime_sign`
//! (`signature` rsa-pkcs1 | rsa-pss, `on_missing_certificate` reject | defer | deliver-unsigned;
//! signing happens before any
//! encryption of the same message, whatever the order of the actions), `rms_protect`
//! (`template`, `rights = { "*@contoso.test" = ["view", "reply"] }`, `expires_after = "30d"`),
//! `add_header` / `set_header` (`name`, `value`; not Content-* or MIME-Version),
//! `prepend_subject` (`text`), `redirect_to` (`addresses`), `reject` (`code` 4xx/5xx default 550,
//! `enhanced` default 5.7.1, `text`), `route_via` (`connector`), `require_tls`.

mod action;
mod eval;
mod explain;
mod load;
mod matchers;
mod model;
mod values;

pub use action::{
    Action, HeaderField, KeyTransport, OnMissingCertificate, OnMissingSigningKey, PrependSubject,
    RedirectTo, Reject, RequireTls, Right, RmsProtect, RouteVia, SignatureScheme, SmimeAlgorithm,
    SmimeEncrypt, SmimeSign,
};
pub use eval::{evaluate, Applied, Evaluation, Group, MessageFacts};
pub use explain::{explain, Explanation, Outcome, RecipientReport, RuleReport};
pub use load::{load_dir, parse_rule_file, RuleError};
pub use matchers::{DomainPattern, Glob};
pub use model::{Condition, HeaderMatch, Rule, RuleSet, Scope};
pub use values::{Address, ConnectorName, HeaderName, HeaderText, Needle, Size};
