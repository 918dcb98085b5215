//! Secrets out of what is kept: a conversation (and the steps progress reports carry) is passed
//! through [`Redactor::redact`] before it leaves the agent. Replaced by `<redacted>`: the
//! agent's own API key, `Authorization` header values, bearer tokens, PEM private keys, the
//! well-known token shapes (OpenAI/Anthropic `sk-…`, GitHub `ghp_…`/`github_pat_…`, GitLab
//! `glpat-…`, Slack `xox?-…`, AWS access key ids, JWTs) and the value of `key = value` /
//! `"key": "value"` pairs whose key names a secret (`password`, `secret`, `token`, `api_key`, …).

use std::sync::LazyLock;

use regex::Regex;

pub(crate) const REDACTED: &str = "<redacted>";

static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)").unwrap()
});
static AUTHORIZATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)(authorization["']?\s*[:=]\s*["']?)[^"'\r\n]+"#).unwrap());
static BEARER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{12,}").unwrap());
static TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b(sk-[A-Za-z0-9_-]{12,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}",
        r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
    ))
    .unwrap()
});
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)\b([A-Za-z0-9_.-]*(password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)"#,
        r#"["']?\s*[:=]\s*)("[^"\r\n]*"|'[^'\r\n]*'|[^\s"',;]+)"#
    ))
    .unwrap()
});

/// Redacts known secret shapes and the agent's own key.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor {
    /// Exact values never to keep (the agent's API key).
    exact: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(exact: impl IntoIterator<Item = String>) -> Redactor {
        Redactor { exact: exact.into_iter().filter(|s| s.len() >= 4).collect() }
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.exact {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        let out = PRIVATE_KEY.replace_all(&out, REDACTED);
        let out = AUTHORIZATION.replace_all(&out, format!("${{1}}{REDACTED}"));
        let out = BEARER.replace_all(&out, format!("${{1}} {REDACTED}"));
        let out = TOKENS.replace_all(&out, REDACTED);
        let out = ASSIGNED.replace_all(&out, |c: &regex::Captures<'_>| {
            if c[3].contains(REDACTED) { c[0].to_owned() } else { format!("{}{REDACTED}", &c[1]) }
        });
        out.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_ordinary_text_is_kept() {
        let r = Redactor::new(["my-own-key-123".to_owned()]);
        let cases = [
            ("key my-own-key-123 here", "key <redacted> here"),
            ("Authorization: Basic dXNlcjpwYXNz", "Authorization: <redacted>"),
            ("curl -H 'Authorization: Bearer abc.def.ghi'", "curl -H 'Authorization: <redacted>'"),
            ("use bearer abcdefghijklmnop1234 now", "use bearer <redacted> now"),
            ("OPENAI=sk-proj-abcdefghijklmnop1234", "OPENAI=<redacted>"),
            ("push with ghp_abcdefghijklmnopqrstuvwxyz0123", "push with <redacted>"),
            ("AKIAABCDEFGHIJKLMNOP is aws", "<redacted> is aws"),
            ("DB_PASSWORD=hunter2 ok", "DB_PASSWORD=<redacted> ok"),
            (r#"{"api_key": "abc123xyz"}"#, r#"{"api_key": <redacted>}"#),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----\nrest", "<redacted>\nrest"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact(input), want, "{input}");
        }
        let plain = "cargo test passed: 12 tests, token budget 500, the key idea is simple";
        assert_eq!(r.redact(plain), plain);
    }
}
