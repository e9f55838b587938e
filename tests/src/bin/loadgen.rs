//! `keyless-loadgen`: an HTTP load generator for a running `keyless serve --dev` on loopback.
//!
//! Before the clock starts it mints one development-issuer token per request (distinct emails),
//! generates P-256 client keys, signs each email as the proof of possession and prebuilds every
//! `POST /api/v2/signingCert` body. Then `--clients` concurrent tasks share a work counter and
//! issue the requests, recording per-request latency.
//!
//! ```text
//! keyless serve --dev --listen 127.0.0.1:5555 --data-dir /tmp/kd &
//! keyless-loadgen --url http://127.0.0.1:5555 --data-dir /tmp/kd --clients 64 --requests 20000
//! ```
//!
//! With `--add-pre-chain CT_URL` it measures the embedded CT log on its own instead: it issues one
//! certificate, takes the logged precertificate chain from `get-entries`, and submits it to
//! `CT_URL/ct/v1/add-pre-chain` (each submission is a new, durably committed entry).
//!
//! `--url` must be the address the server listens on, spelled as it spells it
//! (`http://127.0.0.1:PORT`): the development issuer's `iss` is derived from it. Only loopback
//! targets are accepted.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use keyless_api::dev::DevIssuer;
use reqwest::Url;
use serde_json::json;

/// Load generator for `keyless serve --dev` (loopback only).
#[derive(Parser, Debug)]
#[command(name = "keyless-loadgen", about, long_about = None)]
struct Args {
    /// Base URL of the running `keyless serve --dev`, exactly as it listens (http://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// The server's --data-dir (its development issuer key is read from there).
    #[arg(long)]
    data_dir: PathBuf,
    /// Concurrent clients (each keeps one request in flight).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Timed requests.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Untimed requests sent first, at the same concurrency.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Stop the timed phase after this many seconds even if requests remain.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Distinct P-256 client keys to generate and reuse across identities (0: one per request).
    #[arg(long, default_value_t = 0)]
    key_pool: usize,
    /// Runtime worker threads of the load generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measure the embedded CT log's `add-pre-chain` at this base URL instead of issuance.
    #[arg(long)]
    add_pre_chain: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = check_loopback(&args.url)?;
    if args.clients == 0 || args.requests == 0 {
        bail!("--clients and --requests must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    match args.add_pre_chain.clone() {
        None => {
            let bodies = prepare(&args, &base)?;
            rt.block_on(run(
                args,
                base.clone(),
                format!("{base}/api/v2/signingCert"),
                b"BEGIN CERTIFICATE",
                bodies,
            ))
        }
        Some(ct) => {
            let ct = check_loopback_log(&ct)?;
            let one = Args {
                warmup: 0,
                requests: 1,
                key_pool: 1,
                ..args_clone(&args)
            };
            let first = prepare(&one, &base)?;
            let body = rt.block_on(capture_precert_chain(&base, &ct, &first[0]))?;
            let bodies = vec![body; args.warmup + args.requests];
            rt.block_on(run(
                args,
                ct.clone(),
                format!("{ct}/ct/v1/add-pre-chain"),
                b"sct_version",
                bodies,
            ))
        }
    }
}

fn args_clone(a: &Args) -> Args {
    Args {
        url: a.url.clone(),
        data_dir: a.data_dir.clone(),
        clients: a.clients,
        requests: a.requests,
        warmup: a.warmup,
        max_seconds: a.max_seconds,
        key_pool: a.key_pool,
        threads: a.threads,
        add_pre_chain: None,
    }
}

/// Like [`check_loopback`], but a log URL has a path prefix.
fn check_loopback_log(url: &str) -> anyhow::Result<String> {
    let parsed = Url::parse(url).with_context(|| format!("--add-pre-chain {url:?} is not a URL"))?;
    if !matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) {
        bail!("--add-pre-chain must target 127.0.0.1, localhost or [::1]; refusing {url}");
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// Issues one certificate, waits for the log to publish it, and returns an `add-pre-chain` body
/// holding the logged precertificate and its chain.
async fn capture_precert_chain(base: &str, ct: &str, body: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v2/signingCert"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "issuing the sample certificate failed: HTTP {}: {}",
            r.status(),
            r.text().await?
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let size = loop {
        let sth: serde_json::Value = http.get(format!("{ct}/ct/v1/get-sth")).send().await?.json().await?;
        let size = sth["tree_size"].as_u64().unwrap_or(0);
        if size > 0 {
            break size;
        }
        if Instant::now() > deadline {
            bail!("the log did not publish the sample entry");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = size - 1;
    let entries: serde_json::Value = http
        .get(format!("{ct}/ct/v1/get-entries?start={last}&end={last}"))
        .send()
        .await?
        .json()
        .await?;
    let extra = STANDARD.decode(entries["entries"][0]["extra_data"].as_str().context("no entry")?)?;
    let u24 = |b: &[u8]| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize;
    let n = u24(&extra);
    let mut chain = vec![STANDARD.encode(&extra[3..3 + n])];
    let mut rest = &extra[3 + n + 3..];
    while !rest.is_empty() {
        let m = u24(rest);
        chain.push(STANDARD.encode(&rest[3..3 + m]));
        rest = &rest[3 + m..];
    }
    Ok(serde_json::to_string(&json!({ "chain": chain }))?)
}

/// Refuses anything but a loopback http(s) URL; returns it without a trailing slash.
fn check_loopback(url: &str) -> anyhow::Result<String> {
    let parsed = Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        bail!("--url must be http:// or https://, not {}", parsed.scheme());
    }
    // The URL parser normalizes hosts (127.1 -> 127.0.0.1, IPv6 to canonical form, lower case).
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if !loopback {
        bail!("--url must target 127.0.0.1, localhost or [::1]; refusing {url}");
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        bail!("--url must be a base URL without a path (e.g. http://127.0.0.1:5555)");
    }
    // The normalized form, as the server prints it (the development issuer's `iss` is built from it).
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// Mints the tokens, makes the keys and proofs, and serializes every request body.
fn prepare(args: &Args, base: &str) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let issuer = DevIssuer::open(&args.data_dir, base)?;
    let total = args.warmup + args.requests;
    let rng = SystemRandom::new();
    let pool = if args.key_pool == 0 {
        total
    } else {
        args.key_pool.min(total)
    };
    let mut keys = Vec::with_capacity(pool);
    for _ in 0..pool {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("generated key does not load"))?;
        let spki: PublicKeyX509Der<'static> = pair
            .public_key()
            .as_der()
            .map_err(|_| anyhow::anyhow!("cannot encode the public key"))?;
        keys.push((pair, pem("PUBLIC KEY", spki.as_ref())));
    }
    let run_id = std::process::id();
    let mut bodies = Vec::with_capacity(total);
    for i in 0..total {
        let email = format!("load-{run_id}-{i}@loadgen.example");
        let token = issuer.mint(&email, &email, 3600)?;
        let (pair, key_pem) = &keys[i % pool];
        let proof = pair
            .sign(&rng, email.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing the proof of possession failed"))?;
        let body = json!({
            "credentials": { "oidcIdentityToken": token },
            "publicKeyRequest": {
                "publicKey": { "algorithm": "ECDSA", "content": key_pem },
                "proofOfPossession": STANDARD.encode(proof.as_ref()),
            }
        });
        bodies.push(serde_json::to_string(&body)?);
    }
    eprintln!(
        "prepared {total} requests ({pool} client keys) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(bodies)
}

fn pem(tag: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// What one phase measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: usize,
    errors: usize,
}

struct Shared {
    client: reqwest::Client,
    endpoint: String,
    /// A successful response body contains this.
    needle: &'static [u8],
    bodies: Vec<String>,
    next: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

async fn run(
    args: Args,
    base: String,
    endpoint: String,
    needle: &'static [u8],
    bodies: Vec<String>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let shared = Arc::new(Shared {
        client,
        endpoint,
        needle,
        bodies,
        next: AtomicUsize::new(0),
        first_error: Mutex::new(None),
    });

    if args.warmup > 0 {
        let (tally, elapsed) = phase(
            &shared,
            args.clients,
            args.warmup,
            Duration::from_secs(args.max_seconds),
        )
        .await;
        eprintln!(
            "warm-up: {} requests, {} errors in {:.2} s",
            tally.ok + tally.errors,
            tally.errors,
            elapsed.as_secs_f64()
        );
    }
    // Tasks that stopped at the end of the warm-up each took one index past it: start afresh.
    shared.next.store(args.warmup, Ordering::SeqCst);
    let end = args.warmup + args.requests;
    let (mut tally, elapsed) = phase(&shared, args.clients, end, Duration::from_secs(args.max_seconds)).await;
    tally.latencies.sort_unstable();
    let done = tally.ok + tally.errors;
    let secs = elapsed.as_secs_f64();
    let pct = |p: f64| -> f64 {
        if tally.latencies.is_empty() {
            return 0.0;
        }
        let idx = ((p / 100.0) * (tally.latencies.len() - 1) as f64).round() as usize;
        tally.latencies[idx].as_secs_f64() * 1e3
    };
    println!("url:             {base}");
    println!("clients:         {}", args.clients);
    println!("requests:        {done}");
    println!("errors:          {}", tally.errors);
    println!("elapsed:         {secs:.3} s");
    println!("successes/s:     {:.0}", tally.ok as f64 / secs);
    println!("latency p50:     {:.2} ms", pct(50.0));
    println!("latency p90:     {:.2} ms", pct(90.0));
    println!("latency p99:     {:.2} ms", pct(99.0));
    println!(
        "latency max:     {:.2} ms",
        tally.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    if done < args.requests {
        println!(
            "note:            stopped by --max-seconds {} before all requests",
            args.max_seconds
        );
    }
    if let Some(e) = shared.first_error.lock().map(|g| g.clone()).unwrap_or_default() {
        println!("first error:     {e}");
    }
    if tally.errors > 0 {
        bail!("{} of {done} requests failed", tally.errors);
    }
    Ok(())
}

/// Sends requests until the shared counter reaches `end` or `cap` elapses.
async fn phase(shared: &Arc<Shared>, clients: usize, end: usize, cap: Duration) -> (Tally, Duration) {
    let started = Instant::now();
    let deadline = started + cap;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = shared.next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let t0 = Instant::now();
                let result = shared
                    .client
                    .post(&shared.endpoint)
                    .header("content-type", "application/json")
                    .body(shared.bodies[i].clone())
                    .send()
                    .await;
                let outcome = match result {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(body) if status == reqwest::StatusCode::OK => Ok(body),
                            Ok(body) => Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
                            Err(e) => Err(format!("HTTP {status}, reading the body failed: {e}")),
                        }
                    }
                    Err(e) => Err(format!("request failed: {e}")),
                };
                let latency = t0.elapsed();
                match outcome {
                    Ok(body) if body.windows(shared.needle.len()).any(|w| w == shared.needle) => {
                        tally.ok += 1;
                        tally.latencies.push(latency);
                    }
                    Ok(_) => record_error(
                        &shared,
                        &mut tally,
                        latency,
                        "HTTP 200 without the expected content".into(),
                    ),
                    Err(e) => record_error(&shared, &mut tally, latency, e),
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            total.ok += t.ok;
            total.errors += t.errors;
            total.latencies.extend(t.latencies);
        }
    }
    (total, started.elapsed())
}

fn record_error(shared: &Shared, tally: &mut Tally, latency: Duration, message: String) {
    tally.errors += 1;
    tally.latencies.push(latency);
    if let Ok(mut first) = shared.first_error.lock()
        && first.is_none()
    {
        eprintln!("first error: {message}");
        *first = Some(message);
    }
}
