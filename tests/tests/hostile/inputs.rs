//! Thousands of malformed inputs derived from valid ones.

use super::*;

/// A small deterministic generator, so a failing input can be reproduced from its index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutations of a valid input: truncation, byte flips, splices of hostile fragments, repetition.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    const FRAGMENTS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"\\u0000",
        b"{",
        b"[",
        b"]",
        b"}",
        b",",
        b":",
        b"null",
        b"1e999999",
        b"-0",
        b"\"eyJhbGciOiJub25lIn0.e30.\"",
        b"\xff\xfe",
        b"\x00",
        b"%",
        b"..",
        b"=",
        b"-----BEGIN",
        b"18446744073709551616",
        b"true",
    ];
    let mut out = valid.to_vec();
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            out.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out.truncate(at),
            1 => out[at] ^= 1 << rng.below(8),
            2 => {
                let f = FRAGMENTS[rng.below(FRAGMENTS.len())];
                out.splice(at..at, f.iter().copied());
            }
            3 => {
                let end = (at + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                for _ in 0..rng.below(200) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let open = if rng.below(2) == 0 { b'[' } else { b'{' };
                let depth = 1 + rng.below(5000);
                out.splice(at..at, std::iter::repeat_n(open, depth));
            }
        }
    }
    out
}

/// Thousands of malformed signing requests, CT submissions and configurations derived from valid
/// ones: every answer is a bounded 4xx (never a 5xx, never a certificate), quick, and the server
/// neither panics nor stops serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inputs_get_bounded_answers() {
    let idp = TestIssuer::start("/email").await;
    let ks = Keyless::builder(&format!(
        "ct_log: {{embedded: {{listen: \"127.0.0.1:0\", submissions: {{per_address: off, total: off}}}}}}\n\
         rate_limits: {{per_identity: off}}\nissuers:\n  - {{url: \"{}\", type: email}}\n",
        idp.url
    ))
    .start();
    let key = ClientKey::p256();
    let who = "valid@example.com";
    let valid = sign_body(&idp.mint(&idp.email_claims(who)), &key, who).to_string();
    let csr_body = json!({"credentials": {"oidcIdentityToken": idp.mint(&idp.email_claims(who))},
                          "certificateSigningRequest": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, keyless_tests::p256_csr())})
    .to_string();
    let chain = ks.sign_v2(&serde_json::from_str(&valid).unwrap(), None).await.chain();
    let ct_valid = json!({"chain": chain.iter().map(|p| p.lines().filter(|l| !l.starts_with("-----")).collect::<String>()).collect::<Vec<_>>()}).to_string();
    let http = reqwest::Client::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut issued = 0;
    for i in 0..600 {
        let (url, seed) = match i % 3 {
            0 => (format!("{}/api/v2/signingCert", ks.url), &valid),
            1 => (format!("{}/api/v2/signingCert", ks.url), &csr_body),
            _ => (format!("{}/ct/v1/add-chain", ks.ct_url.as_deref().unwrap()), &ct_valid),
        };
        let body = mutate(&mut rng, seed.as_bytes());
        let start = Instant::now();
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "input {i} took {:?}",
            start.elapsed()
        );
        assert!(text.len() < 4096, "input {i}: a {}-byte answer", text.len());
        match status {
            // A mutation that left the request valid (whitespace, a flipped bit in an ignored
            // field) may issue; a CT resubmission of a valid chain is deduplicated.
            200 => issued += 1,
            400..=499 => {}
            other => panic!(
                "input {i} ({url}) got {other}: {text}\n{}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    assert!(issued < 60, "{issued} of 600 mutated inputs were accepted");
    // Configurations, through `keyless config check`: an error with a path, never a crash.
    let config = format!(
        "listen: 127.0.0.1:0\nct_log: disabled\nlimits: {{max_connections: 100}}\nissuers:\n  - url: \"{}\"\n    type: github-workflow\n    policy:\n      allow: [{{name: tags, when: {{ref: \"refs/tags/*\"}}}}]\n",
        idp.url
    );
    for i in 0..60 {
        let text = mutate(&mut rng, config.as_bytes());
        let path = ks.dir.path().join(format!("mutated-{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let out = keyless_tests::run_keyless(&["config", "check", path.to_str().unwrap()], ks.dir.path(), &[]);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "config {i} made `config check` exit with {code:?}:\n{}\n{}",
            String::from_utf8_lossy(&text),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    legitimate(&ks, &idp, "still@example.com").await;
    assert!(!ks.log().contains("panicked"), "{}", ks.log());
}
