//! The certificate's Subject Alternative Name, and the one gate every URI SAN passes.
//!
//! A URI SAN is read by Go verifiers (`crypto/x509` runs `net/url.Parse` on it and refuses the
//! whole certificate if that fails) and compared by people and policies as text. So a URI is
//! accepted only if Go's parser would accept it, a WHATWG parser (the `url` crate) accepts it, and
//! both see the same scheme, host and port: `http://evil.example\@host/x` is `host` to one parser
//! and `evil.example` to another, and such a URI must never name an identity.

use crate::Error;
use crate::der;
use crate::token::MAX_VALUE_BYTES;

/// The certificate's one Subject Alternative Name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// rfc822Name.
    Email(String),
    /// uniformResourceIdentifier; made only by [`San::uri`].
    Uri(UriSan),
    /// otherName of type 1.3.6.1.4.1.57264.1.7 (a `user!domain` username), UTF8String.
    OtherName(String),
}

/// A URI that passed [`San::uri`]'s checks. Its field is private, so no other code can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriSan(String);

impl UriSan {
    /// The URI exactly as it goes into the certificate.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl San {
    /// The only constructor of a URI SAN: `value`, derived from `claim` of `issuer`'s token, is
    /// refused with the claim and the rule named unless both Go and WHATWG parsers accept it alike.
    pub fn uri(issuer: &str, claim: &str, value: impl Into<String>) -> Result<San, Error> {
        parse_uri(issuer, claim, value.into()).map(|(san, _)| San::Uri(san))
    }

    /// DER GeneralName.
    pub(crate) fn general_name(&self) -> Vec<u8> {
        match self {
            San::Email(e) => der::wrap(0x81, &[e.as_bytes()]),
            San::Uri(u) => der::wrap(0x86, &[u.0.as_bytes()]),
            San::OtherName(v) => {
                let mut arcs = crate::profile::SIGSTORE_ARC.to_vec();
                arcs.push(crate::profile::OTHERNAME_USERNAME_ARC);
                let value = der::context(0, true, &der::utf8_string(v));
                der::context(0, true, &[der::oid(&arcs), value].concat())
            }
        }
    }

    /// The SAN as the issuance record writes it (`email:…`, `uri:…`,
    /// `othername:1.3.6.1.4.1.57264.1.7:…`): the same text the audit tools read back from a
    /// certificate, made here from the value itself so an issuance need not re-parse its own TBS.
    pub fn record_text(&self) -> String {
        match self {
            San::Email(e) => format!("email:{e}"),
            San::Uri(u) => format!("uri:{}", u.0),
            San::OtherName(v) => {
                let arcs = crate::profile::SIGSTORE_ARC.map(|a| a.to_string()).join(".");
                format!("othername:{arcs}.{}:{v}", crate::profile::OTHERNAME_USERNAME_ARC)
            }
        }
    }

    /// The value, whatever its type.
    pub fn value(&self) -> &str {
        match self {
            San::Email(v) | San::OtherName(v) => v,
            San::Uri(u) => u.as_str(),
        }
    }
}

/// [`San::uri`], also returning the parsed URL (the `uri` issuer compares its scheme and host).
pub(crate) fn parse_uri(issuer: &str, claim: &str, value: String) -> Result<(UriSan, url::Url), Error> {
    match check(&value) {
        Ok(url) => Ok((UriSan(value), url)),
        Err(rule) if value.len() > MAX_VALUE_BYTES => Err(Error::claim(issuer, claim, rule)),
        Err(rule) => Err(Error::claim(
            issuer,
            claim,
            format!("gives the URI SAN {value:?}, which is refused: {rule}"),
        )),
    }
}

/// The authority of a URI as Go's `net/url.Parse` splits it.
struct GoAuthority<'a> {
    userinfo: Option<&'a str>,
    /// With brackets for an IPv6 literal, without the port.
    host: &'a str,
    /// Digits after the `:`, possibly empty; `None` without a `:`.
    port: Option<&'a str>,
}

/// Checks `u`; the error is the rule it breaks.
fn check(u: &str) -> Result<url::Url, String> {
    if u.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "gives a URI SAN of {} bytes, over the limit of {MAX_VALUE_BYTES}",
            u.len()
        ));
    }
    for (i, b) in u.bytes().enumerate() {
        match b {
            b' ' => return Err(format!("it contains a space (byte {i})")),
            0..=0x1f | 0x7f => return Err(format!("it contains the control byte 0x{b:02x} (byte {i})")),
            0x80.. => return Err(format!("it contains a non-ASCII byte (byte {i}); a URI SAN is IA5")),
            b'\\' => {
                return Err(format!(
                    "it contains a backslash (byte {i}), which URL parsers disagree about"
                ));
            }
            b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' => {
                return Err(format!(
                    "it contains {:?} (byte {i}), which is not a URI character (RFC 3986)",
                    b as char
                ));
            }
            b'%' if !(u.as_bytes().get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && u.as_bytes().get(i + 2).is_some_and(u8::is_ascii_hexdigit)) =>
            {
                return Err(format!("it has an invalid percent-escape at byte {i}"));
            }
            _ => {}
        }
    }
    let (scheme, rest) = go_scheme(u).ok_or("it has no scheme (a URI SAN must be absolute, RFC 5280)")?;
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    if fragment.contains('#') {
        return Err("it has more than one '#'".into());
    }
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let authority = match rest.strip_prefix("//") {
        Some(a) => Some(go_authority(a.split('/').next().unwrap_or_default())?),
        None => None,
    };
    let parsed = url::Url::parse(u).map_err(|e| format!("it is not a URL ({e})"))?;
    // Both parsers must agree on every part that says whose identity this is.
    let differ =
        |what: &str, go: &str, whatwg: &str| format!("URL parsers read its {what} differently ({go:?} and {whatwg:?})");
    if !parsed.scheme().eq_ignore_ascii_case(scheme) {
        return Err(differ("scheme", scheme, parsed.scheme()));
    }
    match (&authority, parsed.host_str()) {
        (None, None) => {}
        (None, Some(h)) => return Err(differ("host", "", h)),
        (Some(a), h) => {
            if a.userinfo.is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
                return Err("it has userinfo (user@host), which a certificate identity never carries".into());
            }
            if a.host.is_empty() {
                return Err("it has an empty host".into());
            }
            let h = h.unwrap_or_default();
            if !a.host.eq_ignore_ascii_case(h) {
                return Err(differ("host", a.host, h));
            }
            let go_port = a.port.filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().ok());
            let whatwg_port = parsed.port().map(|p| Some(p as u32));
            let default_port = parsed.port_or_known_default().map(|p| Some(p as u32));
            if go_port.is_some() && go_port != whatwg_port && go_port != default_port {
                return Err(differ(
                    "port",
                    a.port.unwrap_or_default(),
                    &parsed.port().map(|p| p.to_string()).unwrap_or_default(),
                ));
            }
        }
    }
    Ok(parsed)
}

/// Go's `getScheme`, requiring a scheme: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`.
fn go_scheme(u: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = u.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    (first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))).then_some((scheme, rest))
}

/// Go's `parseAuthority` and `parseHost`, plus the host check of `crypto/x509` (which refuses a
/// certificate whose URI host has an empty label).
fn go_authority(authority: &str) -> Result<GoAuthority<'_>, String> {
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((ui, hp)) => (Some(ui), hp),
        None => (None, authority),
    };
    if let Some(ui) = userinfo
        && !ui
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b))
    {
        return Err("its userinfo has a character Go's net/url refuses".into());
    }
    let (host, port) = if hostport.starts_with('[') {
        let end = hostport.rfind(']').ok_or("its host has '[' without ']'")?;
        let after = &hostport[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (&hostport[..=end], Some(p)),
            None if after.is_empty() => (&hostport[..=end], None),
            None => return Err(format!("it has an invalid port {after:?} after the host")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if let Some(p) = port
        && !p.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("it has an invalid port {p:?}"));
    }
    if host.contains('%') {
        return Err("its host has a percent-escape".into());
    }
    if !host.starts_with('[') && (host.contains('[') || host.contains(']')) {
        return Err("its host has '[' or ']' outside an IPv6 literal".into());
    }
    if !host.is_empty() && host.split('.').any(str::is_empty) {
        return Err("its host has an empty label (Go's crypto/x509 refuses it)".into());
    }
    Ok(GoAuthority { userinfo, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record's text names what a parser of the certificate finds in the GeneralName.
    #[test]
    fn record_text_is_what_a_parser_reads_from_the_general_name() {
        use x509_parser::extensions::GeneralName;
        use x509_parser::prelude::FromDer;
        for (san, want) in [
            (San::Email("a@example.com".into()), "email:a@example.com"),
            (
                San::uri(
                    "i",
                    "c",
                    "https://github.com/o/r/.github/workflows/x.yml@refs/heads/main",
                )
                .unwrap(),
                "uri:https://github.com/o/r/.github/workflows/x.yml@refs/heads/main",
            ),
            (
                San::OtherName("user!example.com".into()),
                "othername:1.3.6.1.4.1.57264.1.7:user!example.com",
            ),
        ] {
            assert_eq!(san.record_text(), want);
            let der = san.general_name();
            let (_, parsed) = GeneralName::from_der(&der).unwrap();
            let read = match parsed {
                GeneralName::RFC822Name(e) => format!("email:{e}"),
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::OtherName(oid, _) => format!("othername:{oid}:{}", san.value()),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(read, want);
        }
    }

    #[test]
    fn accepted_uris_are_kept_verbatim() {
        for ok in [
            "https://github.com/octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main",
            "https://gitlab.example.com/cpanato/testing-cosign//.gitlab-ci.yml@refs/heads/main",
            "https://g.codefresh.io/codefresh-account/oidc-test/get-token:628a/65e5",
            "spiffe://example.com/ns/prod/sa/web",
            "https://example.com:8443/users/1?x=%41#frag",
            "https://[::1]:8443/x",
            "https://EXAMPLE.com/x",
            "urn:example:opaque",
        ] {
            let san = San::uri("https://issuer.example", "sub", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(san.value(), ok);
        }
    }

    /// Everything Go's `net/url.Parse` refuses, and every shape two parsers read differently.
    #[test]
    fn refusals_name_the_claim_and_the_rule() {
        for (bad, rule) in [
            ("http://evil.example\\@host/x", "backslash"),
            ("https://host\\.evil.example/x", "backslash"),
            ("https://example.com/a b", "space"),
            ("https://example.com/\x07", "control byte 0x07"),
            ("https://example.com/\x7f", "control byte 0x7f"),
            ("https://example.com/\u{e9}", "non-ASCII"),
            ("https://example.com/%zz", "percent-escape"),
            ("https://example.com/%4", "percent-escape"),
            ("https://example.com/a%", "percent-escape"),
            ("https://us[er@example.com/x", "userinfo has a character"),
            ("https://user@example.com/x", "userinfo"),
            ("https://github.com:443@evil.example/x", "userinfo"),
            ("https://example.com:http/x", "invalid port"),
            ("https://[::1]x/y", "invalid port"),
            ("https://[::1/y", "without ']'"),
            ("https://ex%41mple.com/x", "percent-escape"),
            ("https://example..com/x", "empty label"),
            ("https://example.com./x", "empty label"),
            ("https:///x", "empty host"),
            ("https:evil.example/x", "host differently"),
            ("https:/evil.example/x", "host differently"),
            ("https://0x7f.1/x", "host differently"),
            ("https://example.com/a|b", "not a URI character"),
            ("https://example.com/#a#b", "more than one '#'"),
            ("//example.com/x", "no scheme"),
            ("1https://example.com/x", "no scheme"),
            ("https://example.com:99999/x", "not a URL"),
        ] {
            let e = San::uri("https://issuer.example", "job_workflow_ref", bad)
                .expect_err(bad)
                .to_string();
            assert!(e.contains("claim \"job_workflow_ref\""), "{bad}: {e}");
            assert!(e.contains(rule), "{bad}: {e} should mention {rule:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_VALUE_BYTES));
        let e = San::uri("https://issuer.example", "sub", long).unwrap_err().to_string();
        assert!(e.contains("over the limit"), "{e}");
        assert!(e.len() < 300, "the value itself is not echoed: {e}");
    }
}
