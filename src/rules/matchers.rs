//! Text matchers used by rule conditions: case-insensitive globs and domain patterns.
//!
//! Patterns are globs, not regular expressions: `*` matches any run of characters (also none),
//! `?` exactly one character, `\` makes the next character literal. A glob matches the whole
//! text, ignoring case. Globs are parsed once, when the rule is loaded.

use std::fmt;

use serde::Deserialize;

/// One piece of a parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Any,
}

/// A case-insensitive glob (`*`, `?`, `\` escape) matched against a whole string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

impl Glob {
    /// Parses a glob; refuses empty patterns, control characters and a dangling `\`.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        if pattern.chars().any(char::is_control) {
            return Err(format!("control character in pattern {pattern:?}"));
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                }
                '?' => tokens.push(Token::One),
                '\\' => match chars.next() {
                    Some(e) => push_lower(&mut tokens, e),
                    None => return Err(format!("pattern {pattern:?} ends with a lone '\\'")),
                },
                c => push_lower(&mut tokens, c),
            }
        }
        Ok(Glob {
            source: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches, ignoring case.
    pub fn matches(&self, text: &str) -> bool {
        self.matches_lower(&text.to_lowercase())
    }

    /// Like `matches` for text that is already lowercase.
    pub(crate) fn matches_lower(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0usize, 0usize);
        // Where the last `*` was and the text position it currently stands for (backtracking).
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(Token::One) => {
                    p += 1;
                    t += 1;
                }
                Some(Token::Literal(c)) if *c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens.iter().skip(p).all(|tok| *tok == Token::Any)
    }
}

fn push_lower(tokens: &mut Vec<Token>, c: char) {
    tokens.extend(c.to_lowercase().map(Token::Literal));
}

impl TryFrom<String> for Glob {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Glob::new(&value)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A domain condition: `contoso.test` (that domain only) or `*.contoso.test` (any subdomain
/// of it, not the domain itself).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DomainPattern {
    Exact(String),
    Subdomains(String),
}

impl DomainPattern {
    /// Parses and lowercases a domain or `*.domain`.
    pub fn new(text: &str) -> Result<DomainPattern, String> {
        let lower = text.trim().to_lowercase();
        let (wild, domain) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !is_domain(domain) {
            return Err(format!(
                "not a domain or *.domain: {text:?} (a wildcard is allowed only as a leading \"*.\")"
            ));
        }
        Ok(if wild {
            DomainPattern::Subdomains(domain.to_string())
        } else {
            DomainPattern::Exact(domain.to_string())
        })
    }

    /// Whether a lowercase domain matches.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => domain == d,
            DomainPattern::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl TryFrom<String> for DomainPattern {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        DomainPattern::new(&value)
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens (non-ASCII letters allowed).
pub(crate) fn is_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn glob_star_and_question_mark_match_whole_text_ignoring_case() {
        assert!(g("*.exe").matches("Setup.EXE"));
        assert!(g("*.exe").matches(".exe"));
        assert!(!g("*.exe").matches("setup.exe.txt"));
        assert!(!g("*.exe").matches("setup.ex"));
        assert!(g("invoice-????.pdf").matches("Invoice-2026.pdf"));
        assert!(!g("invoice-????.pdf").matches("invoice-26.pdf"));
        assert!(g("*@*.contoso.test").matches("a@mail.contoso.test"));
        assert!(!g("*@*.contoso.test").matches("a@contoso.test"));
        assert!(g("a*b*c").matches("aXXbYYbZZc"));
        assert!(!g("a*b*c").matches("aXXbYYbZZ"));
        assert!(g("*").matches(""));
        assert!(g("**x").matches("x"));
        assert!(g("ÄBC*").matches("äbcd"));
    }

    #[test]
    fn glob_escape_makes_wildcards_literal() {
        assert!(g(r"what\?").matches("what?"));
        assert!(!g(r"what\?").matches("whats"));
        assert!(g(r"\*important\*").matches("*IMPORTANT*"));
        assert!(!g(r"\*important\*").matches("very important"));
    }

    #[test]
    fn glob_refuses_bad_patterns() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("ab\\").is_err());
        assert!(Glob::new("a\nb").is_err());
    }

    #[test]
    fn domain_patterns_exact_and_subdomains() {
        let exact = DomainPattern::new("Fabrikam.TEST").unwrap();
        assert!(exact.matches("fabrikam.test"));
        assert!(!exact.matches("mail.fabrikam.test"));
        let sub = DomainPattern::new("*.fabrikam.test").unwrap();
        assert!(sub.matches("mail.fabrikam.test"));
        assert!(sub.matches("a.b.fabrikam.test"));
        assert!(!sub.matches("fabrikam.test"));
        assert!(!sub.matches("evilfabrikam.test"));
        assert_eq!(sub.to_string(), "*.fabrikam.test");
        for bad in ["", "*", "*.", "a..b", "fab*.test", "-a.test", "a b.test"] {
            assert!(DomainPattern::new(bad).is_err(), "{bad}");
        }
    }
}
