//! Client-influenced text made safe to echo, log and record.
//!
//! A refusal's message often quotes what the client sent (a JSON type error quotes the value, an
//! unknown issuer is named). That text is answered to the client, logged and kept in the issuance
//! record, so it is bounded and anything shaped like a credential is cut out first: a token sent
//! in the wrong field must not land in the log, and 4 MiB of junk must not land on disk.

/// Longest message kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// Longest single field (issuer, subject) kept from an unverified token, in characters.
pub const MAX_FIELD_CHARS: usize = 256;
/// A run of base64 characters this long is taken for a key, proof or signature.
const LONG_RUN: usize = 60;

/// `text` bounded to [`MAX_MESSAGE_CHARS`], with JWTs, PEM bodies and long base64 runs replaced by
/// a note of their size and control characters escaped.
pub fn message(text: &str) -> String {
    bounded(text, MAX_MESSAGE_CHARS)
}

/// A single claimed value (issuer, subject) from an unverified token, bounded to
/// [`MAX_FIELD_CHARS`] and redacted like [`message`].
pub fn field(text: &str) -> String {
    bounded(text, MAX_FIELD_CHARS)
}

fn bounded(text: &str, max_chars: usize) -> String {
    let redacted = redact(text);
    let mut out = String::with_capacity(redacted.len().min(max_chars * 4));
    for (count, c) in redacted.chars().enumerate() {
        if count == max_chars {
            let rest = redacted.len() - out.len();
            out.push_str(&format!("… ({rest} more bytes)"));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_b64(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-')
}

/// Replaces credential-shaped runs. A run is a maximal stretch of base64/base64url characters and
/// dots; it is a token when a dot-separated part starts with `eyJ` (base64 of `{"`, how every JWT
/// header and most payloads begin), and key material when any dot-free part is [`LONG_RUN`]
/// characters or more.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(|c: char| is_b64(c) || c == '.').unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !(is_b64(c) || c == '.')).unwrap_or(rest.len());
        let run = &rest[..end];
        let token = run.split('.').filter(|p| !p.is_empty()).count() >= 2
            && run.split('.').any(|p| p.starts_with("eyJ") && p.len() >= 8);
        let long = run.split('.').any(|p| p.len() >= LONG_RUN);
        if token {
            out.push_str(&format!("<token redacted, {} bytes>", run.len()));
        } else if long {
            out.push_str(&format!("<{} bytes redacted>", run.len()));
        } else {
            out.push_str(run);
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keys_and_proofs_never_survive() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3gifQ.c2lnbmF0dXJlLWJ5dGVz";
        let m = message(&format!("invalid type: string \"{jwt}\", expected struct Credentials"));
        assert!(!m.contains("eyJ") && !m.contains("c2lnbmF0dXJl"), "{m}");
        assert!(
            m.contains("token redacted") && m.contains("expected struct Credentials"),
            "{m}"
        );

        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE".repeat(3)
        );
        let m = message(&format!("bad key {pem}"));
        assert!(!m.contains("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMFkw"), "{m}");

        let proof = "MEUCIQDx".repeat(12);
        assert!(!message(&proof).contains("MEUCIQDx"));
    }

    #[test]
    fn ordinary_messages_are_untouched() {
        for m in [
            "There was an error processing the identity token: issuer \"https://token.actions.githubusercontent.com\" is not configured on this CA",
            "token audience \"x\" does not contain \"sigstore\", required by issuer https://accounts.google.com",
            "claim \"job_workflow_ref\" is missing",
            "RSA modulus is 1024 bits",
        ] {
            assert_eq!(message(m), m);
        }
    }

    #[test]
    fn size_and_control_characters_are_bounded() {
        let m = message(&"x ".repeat(1 << 20));
        assert!(m.chars().count() < MAX_MESSAGE_CHARS + 40, "{}", m.len());
        assert!(m.ends_with("more bytes)"));
        assert_eq!(message("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert!(field(&"s".repeat(10_000)).len() < MAX_FIELD_CHARS + 40);
    }
}
