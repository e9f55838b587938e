//! Go's `url.Parse(base).JoinPath(elems...).String()`, which Fulcio's built-in GitHub, GitLab,
//! Codefresh and Chainguard mappings use to build URLs from claims. Reproduced so certificates
//! carry the strings Fulcio's do: the elements are joined with `/` onto the base path, the result
//! is cleaned like Go's `path.Clean` (`.` and `..` segments resolved, repeated `/` collapsed, a
//! trailing `/` kept), and characters a path cannot hold are percent-escaped.
//!
//! Where Go silently falls back (an element with a malformed `%` escape makes `JoinPath` return the
//! base URL unchanged, so every such token would get the same SAN), this refuses instead.

/// `base` joined with `elems` as Go joins them. `base` must be `scheme://host[/path]` without
/// query or fragment; the error says what is wrong.
pub(crate) fn join_path(base: &str, elems: &[&str]) -> Result<String, String> {
    let (scheme, rest) = base
        .split_once("://")
        .filter(|(s, _)| !s.is_empty())
        .ok_or_else(|| format!("{base:?} is not an absolute URL"))?;
    if rest.contains(['?', '#']) {
        return Err(format!("{base:?} has a query or fragment"));
    }
    let (host, base_path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // `url.Parse` keeps the base path's own spelling when it is validly escaped.
    let base_path = escaped_path(base_path).ok_or_else(|| format!("{base:?} has an invalid percent-escape"))?;
    let mut parts: Vec<&str> = vec![&base_path];
    parts.extend_from_slice(elems);
    let joined = clean_rooted(&parts);
    let mut path = if base_path.starts_with('/') {
        joined
    } else {
        joined[1..].to_string()
    };
    if elems.last().is_some_and(|e| e.ends_with('/')) && !path.ends_with('/') {
        path.push('/');
    }
    let path = escaped_path(&path).ok_or_else(|| "a path element has an invalid percent-escape".to_string())?;
    let slash = if !path.is_empty() && !path.starts_with('/') && !host.is_empty() {
        "/"
    } else {
        ""
    };
    Ok(format!("{}://{host}{slash}{path}", scheme.to_ascii_lowercase()))
}

/// `path.Join` of `parts` made rooted, as `JoinPath` does: empty parts dropped, then `path.Clean`.
fn clean_rooted(parts: &[&str]) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for part in parts {
        for seg in part.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
    }
    format!("/{}", segments.join("/"))
}

/// What Go's `URL.EscapedPath` returns after `setPath(p)`: `p` itself when it is validly escaped,
/// else its unescaped bytes escaped again. `None` when `p` has a malformed `%` escape.
fn escaped_path(p: &str) -> Option<String> {
    let raw = unescape(p)?;
    if p.bytes().all(valid_encoded) {
        return Some(p.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw {
        if should_escape(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    Some(out)
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Go's `shouldEscape(c, encodePath)`.
fn should_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&c))
}

/// Go's `validEncoded(s, encodePath)`, per byte.
fn valid_encoded(c: u8) -> bool {
    b"!$&'()*+,;=:@[]%".contains(&c) || !should_escape(c)
}

#[cfg(test)]
mod tests {
    use super::join_path;

    /// Values from Fulcio's principal tests and from Go's `net/url` behaviour.
    #[test]
    fn joins_as_go_does() {
        let j = |base: &str, elems: &[&str]| join_path(base, elems).unwrap();
        assert_eq!(
            j(
                "https://github.com/",
                &["sigstore/fulcio/.github/workflows/foo.yaml@refs/heads/main"]
            ),
            "https://github.com/sigstore/fulcio/.github/workflows/foo.yaml@refs/heads/main"
        );
        assert_eq!(
            j(
                "https://github.com/",
                &["repository", "actions/runs", "runID", "attempts", "runAttempt"]
            ),
            "https://github.com/repository/actions/runs/runID/attempts/runAttempt"
        );
        assert_eq!(
            j(
                "https://gitlab.com/",
                &["cpanato/testing-cosign", "/-/jobs/", "3659681386"]
            ),
            "https://gitlab.com/cpanato/testing-cosign/-/jobs/3659681386"
        );
        assert_eq!(
            j(
                "https://g.codefresh.io",
                &["codefresh-account", "oidc-test/get-token:628a/65e5"]
            ),
            "https://g.codefresh.io/codefresh-account/oidc-test/get-token:628a/65e5"
        );
        // The path is cleaned: `..`, `.` and repeated slashes; a trailing slash is kept.
        assert_eq!(
            j("https://github.com/", &["o/r/../x//y/./z"]),
            "https://github.com/o/x/y/z"
        );
        assert_eq!(j("https://github.com/", &["../../etc"]), "https://github.com/etc");
        assert_eq!(j("https://x.example/base", &["a/"]), "https://x.example/base/a/");
        assert_eq!(
            j("https://g.codefresh.io", &["", "p:1/2"]),
            "https://g.codefresh.io/p:1/2"
        );
        assert_eq!(j("https://x.example", &[]), "https://x.example");
        // Characters a path cannot hold are escaped; valid escapes and sub-delims are kept.
        assert_eq!(j("https://x.example/", &["a b?c#d"]), "https://x.example/a%20b%3Fc%23d");
        assert_eq!(j("https://x.example/", &["a%20b!*'()"]), "https://x.example/a%20b!*'()");
        assert_eq!(j("https://x.example/", &["é"]), "https://x.example/%C3%A9");
        assert_eq!(j("HTTPS://x.example/", &["a"]), "https://x.example/a");
        // Go would return the base URL unchanged: refused instead.
        assert!(join_path("https://x.example/", &["a%zz"]).is_err());
        assert!(join_path("x.example", &["a"]).is_err());
        assert!(join_path("https://x.example/?q", &["a"]).is_err());
    }
}
