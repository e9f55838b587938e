//! A private, throwaway PostgreSQL cluster on 127.0.0.1 for the tests of the shared issuance
//! record: `initdb` (trust authentication on loopback) under a temporary directory, the server on
//! a free port, stopped, started again or killed at will, removed on drop.
//!
//! `initdb` and `postgres` refuse to run as root (the tests do, here and in CI), so as root they
//! run as the `postgres` OS user the Debian package creates, in a directory it owns. Nothing is
//! skipped: without the server binaries the test fails and says to run `scripts/test.sh`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One throwaway cluster. Its superuser is `postgres`; databases are created on demand.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest installed `…/postgresql/<version>/bin` with `initdb` and `pg_ctl`.
fn server_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("KEYLESS_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL server (initdb, pg_ctl under /usr/lib/postgresql/<version>/bin) is not installed: \
             run scripts/test.sh, which installs the `postgresql` package (or set KEYLESS_PG_BIN)"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn check(what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PgCluster {
    /// Creates and starts a new cluster.
    pub fn start_new() -> PgCluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("keyless-pg-")
            .tempdir()
            .expect("a temporary directory");
        let as_postgres = is_root();
        if as_postgres {
            check(
                "chown the cluster directory to postgres",
                Command::new("chown").arg("postgres:").arg(dir.path()).output(),
            );
        }
        let cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        check(
            "initdb",
            cluster
                .server_command("initdb")
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--no-sync",
                    "--encoding=UTF8",
                    "-D",
                ])
                .arg(cluster.data())
                .output(),
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn server_command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The loopback port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `db` (trust authentication: no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections (panics with its log).
    pub fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        check(
            &format!(
                "pg_ctl start (server log: {})",
                self.dir.path().join("server.log").display()
            ),
            self.server_command("pg_ctl")
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(self.dir.path().join("server.log"))
                .arg("-D")
                .arg(self.data())
                .arg("start")
                .output(),
        );
    }

    /// Stops the server (fast shutdown: connections are closed).
    pub fn stop(&self) {
        check(
            "pg_ctl stop",
            self.server_command("pg_ctl")
                .args(["-w", "-t", "60", "-m", "fast", "-D"])
                .arg(self.data())
                .arg("stop")
                .output(),
        );
    }

    /// Kills the server with SIGKILL, the postmaster and its backends at once (as when its
    /// machine dies); [`PgCluster::start`] recovers.
    pub fn kill(&self) {
        let pid_file = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("the server is running");
        let pid = text.lines().next().unwrap_or_default().trim().to_string();
        // Its children, by id, before they are reparented.
        let mut pids = vec![pid.clone()];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid …`; comm may contain spaces, so split after its `)`.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(pid.as_str()) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let _ = Command::new("kill").arg("-9").args(&pids).output();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie nobody reaps (PID 1 of a container may not).
        let alive = |p: &String| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
                == Some(false)
        };
        while pids.iter().any(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Nothing of it runs any more, as after a reboot; an unreaped zombie would otherwise
        // still look like the owner of the lock file to the next postmaster.
        let _ = std::fs::remove_file(&pid_file);
        for stale in [
            format!(".s.PGSQL.{}.lock", self.port),
            format!(".s.PGSQL.{}", self.port),
        ] {
            let _ = std::fs::remove_file(self.dir.path().join(stale));
        }
    }

    /// Runs SQL with `psql` in `db` and returns its unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        check(
            &format!("psql {sql:?}"),
            Command::new("psql")
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.url(db))
                .args(["-c", sql])
                .output(),
        )
        .trim()
        .to_string()
    }

    /// Restarts the server with TLS (`cert_pem` and `key_pem` as its certificate and key) and
    /// accepts only encrypted connections on loopback from then on.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        self.stop();
        let data = self.data();
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        if self.as_postgres {
            for f in ["server.crt", "server.key", "pg_hba.conf", "postgresql.conf"] {
                check(
                    "chown",
                    Command::new("chown").arg("postgres:").arg(data.join(f)).output(),
                );
            }
        }
        check(
            "chmod",
            Command::new("chmod").arg("600").arg(data.join("server.key")).output(),
        );
        self.start();
    }

    /// Creates a database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .server_command("pg_ctl")
                .args(["-w", "-t", "20", "-m", "immediate", "-D"])
                .arg(self.data())
                .arg("stop")
                .output();
        }
    }
}
