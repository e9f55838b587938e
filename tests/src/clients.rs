//! The real Sigstore clients and third-party OIDC issuers, as subprocesses.
//!
//! `scripts/test.sh` installs them in pinned versions: sigstore-python into `target/venv/sigstore`,
//! PyPI `oidc-provider-mock` into `target/venv/oidc-mock`, the gRPC client (grpcio) into
//! `target/venv/grpc`, and the npm packages (`@sigstore/sign`, `@sigstore/verify`,
//! `@sigstore/cli`, `oauth2-mock-server`) into `tests/clients/node_modules` from the committed
//! lockfile. The drivers in `tests/clients/{js,python}` print what the client
//! read back as JSON; [`ClientRun`] keeps the client's own output for failure messages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `tests/clients`: the drivers and `node_modules`.
pub fn clients_dir() -> PathBuf {
    workspace().join("tests/clients")
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test.sh, which installs the pinned clients",
        path.display()
    );
    path
}

/// The sigstore-python venv's interpreter.
pub fn sigstore_python() -> PathBuf {
    installed(workspace().join("target/venv/sigstore/bin/python"))
}

/// The gRPC client venv's interpreter (grpcio, grpcio-tools, grpcio-health-checking,
/// cryptography), which runs `tests/clients/python/grpc_client.py`.
pub fn grpc_python() -> PathBuf {
    installed(workspace().join("target/venv/grpc/bin/python"))
}

/// The proto files the gRPC front door is built from (`grpc/proto`).
pub fn grpc_proto_dir() -> PathBuf {
    workspace().join("grpc/proto")
}

/// sigstore-python's `sigstore` command.
pub fn sigstore_python_cli() -> PathBuf {
    installed(workspace().join("target/venv/sigstore/bin/sigstore"))
}

/// `@sigstore/cli`'s `sigstore` command.
pub fn sigstore_js_cli() -> PathBuf {
    installed(clients_dir().join("node_modules/.bin/sigstore"))
}

/// A client subprocess that ran to completion.
#[derive(Debug)]
pub struct ClientRun {
    /// Exit status was 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ClientRun {
    /// Runs `cmd` (two minutes at most).
    pub fn run(cmd: &mut Command) -> ClientRun {
        let out = crate::run_with_timeout(cmd, Duration::from_secs(120));
        ClientRun {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The JSON the driver printed; panics with the client's own output if it failed.
    pub fn json(&self) -> Value {
        assert!(self.ok, "the client refused:\n{}\n{}", self.stderr, self.stdout);
        let line = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("client output is not JSON ({e}): {}", self.stdout))
    }

    /// Asserts the client failed, and returns its error output.
    pub fn failure(&self) -> String {
        assert!(
            !self.ok,
            "the client was expected to refuse but succeeded:\n{}",
            self.stdout
        );
        format!("{}\n{}", self.stderr, self.stdout)
    }
}

/// `node tests/clients/js/<script> <args>`.
pub fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(installed(clients_dir().join("js").join(script)))
        .current_dir(clients_dir());
    installed(clients_dir().join("node_modules"));
    cmd
}

/// `target/venv/sigstore/bin/python tests/clients/python/sigstore_py.py <args>`.
pub fn sigstore_py() -> Command {
    let mut cmd = Command::new(sigstore_python());
    cmd.arg(clients_dir().join("python/sigstore_py.py"));
    cmd
}

/// Reads the first stdout line of `child` within 30 s.
fn first_line(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if !line.trim().is_empty() => line,
        _ => {
            let _ = child.kill();
            panic!("{what} did not start");
        }
    }
}

/// npm `oauth2-mock-server` on loopback (discovery and JWKS from the package, RS256 tokens with a
/// `kid`), wrapped by `tests/clients/js/issuer.mjs`, which adds `POST /mint`.
pub struct MockServerIssuer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for MockServerIssuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MockServerIssuer {
    /// Starts the issuer and waits until it listens.
    pub fn start() -> MockServerIssuer {
        let mut child = node("issuer.mjs")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node starts");
        let line = first_line(&mut child, "oauth2-mock-server");
        let url = serde_json::from_str::<Value>(&line).unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string();
        MockServerIssuer {
            url,
            child,
            http: reqwest::Client::new(),
        }
    }

    /// A token carrying `claims` (`iss`, `iat`, `exp` come from the package unless set; a claim
    /// set to null is removed).
    pub async fn mint(&self, claims: &Value) -> String {
        let resp = self
            .http
            .post(format!("{}/mint", self.url))
            .json(claims)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "mint failed: {}",
            resp.text().await.unwrap()
        );
        resp.text().await.unwrap()
    }
}

/// PyPI `oidc-provider-mock` on loopback: tokens without `kid`, with an array `aud`, from its
/// authorization-code flow.
pub struct OidcProviderMock {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: Child,
}

impl Drop for OidcProviderMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProviderMock {
    /// Starts the provider on a free port and waits until discovery answers.
    pub async fn start() -> OidcProviderMock {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = installed(workspace().join("target/venv/oidc-mock/bin/oidc-provider-mock"));
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let discovery = format!("{url}/.well-known/openid-configuration");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(&discovery).await
                && r.status().is_success()
            {
                return OidcProviderMock { url, child };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("oidc-provider-mock exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        panic!("oidc-provider-mock did not answer on {url}");
    }

    /// An ID token for `sub` with a verified `email`, through the provider's login flow.
    pub fn token(&self, sub: &str, email: &str) -> String {
        let run = ClientRun::run(sigstore_py().args([
            "oidc-mock-token",
            "--issuer",
            &self.url,
            "--sub",
            sub,
            "--email",
            email,
        ]));
        assert!(run.ok, "oidc-provider-mock login failed:\n{}", run.stderr);
        run.stdout.trim().to_string()
    }
}
