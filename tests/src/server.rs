//! The `keyless` binary as a subprocess: started by [`KeylessBuilder`], talked to over HTTP,
//! signalled, restarted, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::hsm::{Backend, SoftHsm};

/// Where the `keyless` binary is: `$KEYLESS_BIN`, or beside this test's target directory.
pub fn keyless_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEYLESS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("keyless");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin keyless` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// `keyless ctlog serve --config CONFIG` run in a directory, as an operator runs one log shared by
/// several CAs; killed on drop.
pub struct LogServer {
    /// The log's base URL (`http://127.0.0.1:PORT/<prefix>`).
    pub url: String,
    /// The log's public key (SubjectPublicKeyInfo DER), also written to `log-pub.pem` beside the
    /// configuration for a CA's `ct_log.public_key`.
    pub spki: Vec<u8>,
    child: Child,
}

impl LogServer {
    /// Starts the log and waits for its address; takes its key from `keyless trusted-root`.
    pub fn start(dir: &Path, config: &str) -> LogServer {
        use base64::Engine as _;
        let mut child = Command::new(keyless_bin())
            .args(["ctlog", "serve", "--config", config])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // Owned from here, so a failed assertion below still stops it.
        let mut log = LogServer {
            url: String::new(),
            spki: Vec::new(),
            child,
        };
        log.url = line
            .trim()
            .strip_prefix("keyless: ct log listening on ")
            .unwrap_or_else(|| panic!("no ct log line: {line:?}"))
            .to_string();
        let out = run_keyless(
            &[
                "trusted-root",
                "--config",
                config,
                "--ca-url",
                "http://ca.invalid",
                "--ct-url",
                &log.url,
            ],
            dir,
            &[],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let tr: Value = serde_json::from_slice(&out.stdout).unwrap();
        log.spki = base64::engine::general_purpose::STANDARD
            .decode(tr["ctlogs"][0]["publicKey"]["rawBytes"].as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join("log-pub.pem"), crate::pem("PUBLIC KEY", &log.spki)).unwrap();
        log
    }
}

impl Drop for LogServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `keyless serve` subprocess.
pub struct Keyless {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Environment the server runs with (e.g. SoftHSM's config and the PIN).
    env: Vec<(String, String)>,
    /// The SoftHSM token the CA key lives in, kept alive as long as the server.
    pub hsm: Option<SoftHsm>,
    /// The embedded CT log's base URL, when it runs.
    pub ct_url: Option<String>,
    /// The Prometheus endpoint, when `metrics_listen` is set.
    pub metrics_url: Option<String>,
    /// The gRPC listener's `HOST:PORT`, when `grpc_listen` is set.
    pub grpc_addr: Option<String>,
    /// The server's working directory (config, data, logs).
    pub dir: tempfile::TempDir,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Keyless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- keyless server log ----\n{}", self.log());
        }
    }
}

/// The response to an API call.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Raw body.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The error `message`.
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_string()
    }

    /// The chain of a v2 success, PEM strings, leaf first.
    pub fn chain(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "expected success, got {}: {}", self.status, self.body);
        self.json()["signedCertificateEmbeddedSct"]["chain"]["certificates"]
            .as_array()
            .expect("signedCertificateEmbeddedSct.chain.certificates")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

impl Keyless {
    /// How to start `keyless serve` with `config` (YAML): in a fresh temporary directory, with the
    /// generated file CA and no extra environment unless the builder says otherwise. `listen`
    /// and `data_dir` are filled in unless the config sets them.
    pub fn builder(config: &str) -> KeylessBuilder {
        KeylessBuilder {
            config: config.to_string(),
            backend: Backend::File,
            dir: None,
            env: Vec::new(),
        }
    }

    /// The Sigstore trusted root that `keyless trusted-root` prints for this server.
    pub fn trusted_root(&self) -> Value {
        self.trust_material(&[])
    }

    /// The `ClientTrustConfig` that `keyless trusted-root --client-config` prints, naming
    /// `rekor_url` as the (out-of-project) Rekor.
    pub fn client_trust_config(&self, rekor_url: &str) -> Value {
        self.trust_material(&["--client-config", "--rekor-url", rekor_url])
    }

    fn trust_material(&self, extra: &[&str]) -> Value {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = vec![
            "trusted-root",
            "--config",
            "keyless.yaml",
            "--ca-url",
            &self.url,
            "--ct-url",
            self.ct_url.as_deref().unwrap_or("http://unused"),
        ];
        args.extend_from_slice(extra);
        let out = run_keyless(&args, self.dir.path(), &env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The Prometheus exposition text.
    pub async fn metrics(&self) -> String {
        let url = self.metrics_url.as_deref().expect("metrics_listen is set");
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// GETs `path` from the embedded CT log.
    pub async fn ct_get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.ct_url.as_deref().expect("the embedded CT log runs"));
        let resp = self.http.get(&url).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "GET {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Kills the server with SIGKILL and starts it again in the same directory with the same
    /// configuration (new ports, same data).
    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.respawn();
    }

    /// Sends SIGTERM, waits (30 s at most) for the graceful shutdown to finish, and starts the
    /// server again like [`Keyless::restart_after_kill9`]. Returns the exit status of the old one.
    pub fn restart_after_sigterm(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "keyless did not exit within 30 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.respawn();
        status
    }

    fn respawn(&mut self) {
        let log = std::fs::File::options()
            .append(true)
            .open(self.dir.path().join("keyless.log"))
            .unwrap();
        let mut child = Command::new(keyless_bin())
            .args(["serve", "--config", "keyless.yaml"])
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KEYLESS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let Some(listening) = wait_for_listen(&mut child) else {
            let _ = child.kill();
            panic!("keyless did not restart:\n{}", self.log());
        };
        self.child = child;
        self.url = listening.url;
        self.ct_url = listening.ct_url;
        self.metrics_url = listening.metrics_url;
        self.grpc_addr = listening.grpc_addr;
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `USR1`) to the server with `kill`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name} failed");
    }

    /// Sends SIGKILL and waits for the process to die.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keyless.log")).unwrap_or_default()
    }

    /// POSTs a JSON body (with optional bearer token) to `path`.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>, bearer: Option<&str>) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        reply(req.send().await.unwrap()).await
    }

    /// POSTs a streamed body of unknown length, on a connection of its own (the server may close
    /// it mid-upload, which must not poison the shared connection pool).
    pub async fn post_stream(&self, path: &str, body: reqwest::Body) -> Result<Reply, reqwest::Error> {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(reply(resp).await)
    }

    /// Writes raw bytes to the server and returns what it answers (for requests a client library
    /// would not send, such as a declared length with a truncated body).
    pub async fn raw_exchange(&self, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        let read = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if String::from_utf8_lossy(&got).contains("\"details\"") {
                            break;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    /// POSTs a v2 signingCert request.
    pub async fn sign_v2(&self, body: &Value, bearer: Option<&str>) -> Reply {
        self.post("/api/v2/signingCert", serde_json::to_vec(body).unwrap(), bearer)
            .await
    }

    /// Sends `bodies` as v2 signingCert requests from `clients` concurrent clients, each working
    /// through its share in order with `pause` between requests. Returns at once, so the caller can
    /// inject faults while the load runs; awaiting the handle gives every reply, in input order.
    pub fn sign_v2_concurrently(
        &self,
        bodies: Vec<Value>,
        clients: usize,
        pause: Duration,
    ) -> tokio::task::JoinHandle<Vec<Reply>> {
        let per_client = bodies.len().div_ceil(clients.max(1)).max(1);
        let tasks: Vec<_> = bodies
            .chunks(per_client)
            .map(|share| {
                let (http, url, share) = (self.http.clone(), self.url.clone(), share.to_vec());
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    for body in share {
                        let resp = http.post(format!("{url}/api/v2/signingCert")).json(&body).send();
                        replies.push(reply(resp.await.unwrap()).await);
                        tokio::time::sleep(pause).await;
                    }
                    replies
                })
            })
            .collect();
        tokio::spawn(async move {
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        })
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> Reply {
        reply(self.http.get(format!("{}{path}", self.url)).send().await.unwrap()).await
    }

    /// True if the server still answers `/healthz`.
    pub async fn healthy(&self) -> bool {
        let r = self.get("/healthz").await;
        r.status == 200 && r.json()["status"] == "SERVING"
    }
}

/// How to start a [`Keyless`] server: [`Keyless::builder`], then options, then
/// [`KeylessBuilder::start`].
pub struct KeylessBuilder {
    config: String,
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

impl KeylessBuilder {
    /// Where the CA key lives (default: the generated file CA). With [`Backend::Pkcs11`] the
    /// configuration gets the token's `ca:` section, `keyless ca init` runs first, and the token
    /// lives as long as the server ([`Keyless::hsm`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs in `dir` (default: a fresh temporary directory), e.g. one holding files the
    /// configuration names.
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// One more environment variable for the server (kept across restarts).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// More environment variables for the server.
    pub fn envs<K: Into<String>, V: Into<String>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Writes the configuration and starts the server; returns once it listens (panics with its
    /// log if it does not start).
    pub fn start(self) -> Keyless {
        let dir = match self.dir {
            Some(dir) => dir,
            None => tempfile::tempdir().unwrap(),
        };
        let (config, hsm, mut env) = match self.backend {
            Backend::File => (self.config, None, Vec::new()),
            Backend::Pkcs11(hsm) => {
                let config = format!("{}{}", self.config, hsm.ca_yaml("keyless-issuing", "pki/chain.pem"));
                let env = hsm.env();
                (config, Some(hsm), env)
            }
        };
        env.extend(self.env);
        write_config(dir.path(), &config);
        if hsm.is_some() {
            let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = run_keyless(&["ca", "init", "--config", "keyless.yaml"], dir.path(), &env_refs);
            assert!(
                out.status.success(),
                "ca init on SoftHSM failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(dir.path().join("keyless.log")).unwrap();
        let mut child = Command::new(keyless_bin())
            .args(["serve", "--config"])
            .arg(dir.path().join("keyless.yaml"))
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KEYLESS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let listening = match wait_for_listen(&mut child) {
            Some(listening) => listening,
            None => {
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("keyless.log")).unwrap_or_default();
                panic!("keyless did not start:\n{log}");
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Keyless {
            url: listening.url,
            env,
            hsm,
            metrics_url: listening.metrics_url,
            ct_url: listening.ct_url,
            grpc_addr: listening.grpc_addr,
            dir,
            child,
            http,
        }
    }
}

/// Writes `keyless.yaml` into `dir`: `config` with `listen` (any free loopback port) and
/// `data_dir` (`./data`) first unless it sets them.
fn write_config(dir: &Path, config: &str) {
    let mut text = String::new();
    if !config.lines().any(|l| l.starts_with("listen:")) {
        text.push_str("listen: 127.0.0.1:0\n");
    }
    if !config.lines().any(|l| l.starts_with("data_dir:")) {
        text.push_str("data_dir: ./data\n");
    }
    text.push_str(config);
    std::fs::write(dir.join("keyless.yaml"), text).unwrap();
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.text().await.unwrap();
    Reply {
        status,
        content_type,
        body,
    }
}

/// Where a started server listens.
struct Listening {
    url: String,
    ct_url: Option<String>,
    metrics_url: Option<String>,
    grpc_addr: Option<String>,
}

/// Waits for `keyless: listening on URL` (after the CT log's, the metrics' and the gRPC
/// listener's lines, if any).
fn wait_for_listen(child: &mut Child) -> Option<Listening> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut ct_url, mut metrics_url, mut grpc_addr) = (None, None, None);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("keyless: ct log listening on ") {
                ct_url = Some(url.trim().to_string());
            }
            if let Some(url) = line.strip_prefix("keyless: metrics listening on ") {
                metrics_url = Some(url.trim().to_string());
            }
            if let Some(addr) = line.strip_prefix("keyless: grpc listening on ") {
                grpc_addr = Some(addr.trim().to_string());
            }
            if let Some(url) = line.strip_prefix("keyless: listening on ") {
                let _ = tx.send(Listening {
                    url: url.trim().to_string(),
                    ct_url: ct_url.clone(),
                    metrics_url: metrics_url.clone(),
                    grpc_addr: grpc_addr.clone(),
                });
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).ok()
}

/// Runs `keyless <args>` to completion in `dir` (60 s at most) and returns its output.
pub fn run_keyless(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(keyless_bin());
    cmd.args(args).current_dir(dir).envs(env.iter().copied());
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// Runs `cmd` to completion with stdout and stderr captured; kills it and panics after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Drain the pipes while waiting, so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}
