//! The `keyless` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use keyless_ca::ceremony::CaNames;
use keyless_config::Config;

use keyless_api::dev::DevIssuer;

/// Keyless CA: a short-lived code-signing certificate authority, wire-compatible with Sigstore's
/// Fulcio.
#[derive(Parser, Debug)]
#[command(name = "keyless", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the CA's HTTP API.
    Serve {
        /// Configuration file (YAML).
        #[arg(long, required_unless_present = "dev", conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Development mode: generated CA in ./keyless-data, an INSECURE built-in OIDC issuer
        /// (loopback only), and the embedded CT log on 127.0.0.1:6962. Never for production.
        #[arg(long)]
        dev: bool,
        /// Override the listen address (e.g. 127.0.0.1:0 for a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// With --dev: where state lives.
        #[arg(long, default_value = "./keyless-data", requires = "dev")]
        data_dir: PathBuf,
        /// With --dev: `embedded` (default) or `disabled` Certificate Transparency.
        #[arg(long, default_value = "embedded", requires = "dev", value_parser = ["embedded", "disabled"])]
        ct_log: String,
    },
    /// Manage the CA's keys and certificates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Check configuration files and explain tokens, without issuing anything.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the Sigstore trusted root (CA chain and CT log key) for clients and verifiers.
    TrustedRoot {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Print sigstore-python's ClientTrustConfig (trusted root + signing config) instead.
        #[arg(long)]
        client_config: bool,
        /// The CA's public URL (default: from `listen`).
        #[arg(long)]
        ca_url: Option<String>,
        /// The CT log's public URL (default: from `ct_log`).
        #[arg(long)]
        ct_url: Option<String>,
        /// A Rekor URL for the client config's `rekorTlogUrls` (this project runs none).
        #[arg(long, requires = "client_config")]
        rekor_url: Option<String>,
    },
    /// Run the embedded CT log on its own, without the CA API.
    Ctlog {
        #[command(subcommand)]
        command: CtlogCommand,
    },
    /// Compliance: verify the issuance record, follow CT logs, cross-check, query, watch, and
    /// serve the review page.
    Audit {
        #[command(subcommand)]
        command: crate::audit_cli::AuditCommand,
    },
    /// Development helpers (insecure by design).
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create what `ca:` describes: a P-384 root, a P-256 issuing intermediate, the key (encrypted
    /// when a password is configured) and the chain file. Never overwrites existing material.
    Init {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// File CA only: the issuing key's algorithm: ecdsa-p256, ecdsa-p384, ecdsa-p521, rsa-2048,
        /// rsa-3072, rsa-4096 or ed25519 (the root stays ECDSA P-384).
        #[arg(long, default_value = "ecdsa-p256")]
        algorithm: keyless_ca::KeySpec,
        /// PKCS#11 only: create just the root key and self-signed root in this token (an offline
        /// root); the chain file then holds only the root.
        #[arg(long, conflicts_with = "intermediate_from")]
        root_only: bool,
        /// PKCS#11 only: create just the issuing key in this token, certified by the root of the
        /// configuration given here (its token connected for the ceremony).
        #[arg(long)]
        intermediate_from: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate FILE and print every error with its path; optionally probe issuers and explain a
    /// token (which issuer matches, whether it verifies, the policy decision, the SAN and every
    /// extension value it would get). Exits non-zero if anything fails.
    Check {
        /// Configuration file (YAML).
        file: PathBuf,
        /// A token to explain (fetches its issuer's keys to verify it).
        #[arg(long)]
        token: Option<String>,
        /// Also fetch discovery and JWKS of every exact issuer and report which answer.
        #[arg(long)]
        online: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Treat warnings (settings Fulcio ignores or Keyless CA applies differently) as errors.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CtlogCommand {
    /// Serve the embedded RFC 6962 log described by `ct_log.embedded`, trusting the CA's root.
    Serve {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Print an ID token from the insecure development issuer of `keyless serve --dev`.
    Token {
        /// Email address the token vouches for (marked verified).
        #[arg(long)]
        email: String,
        /// Token subject; defaults to the email.
        #[arg(long)]
        sub: Option<String>,
        /// Base URL of the running `keyless serve --dev`.
        #[arg(long, default_value = "http://127.0.0.1:5555")]
        url: String,
        /// Data directory of the running `keyless serve --dev`.
        #[arg(long, default_value = "./keyless-data")]
        data_dir: PathBuf,
        /// Token lifetime in seconds.
        #[arg(long, default_value_t = 600)]
        ttl: u64,
    },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Audit { command } = cli.command {
        init_logging(keyless_config::LogFormat::default());
        // 0 clean, 1 findings, 2 the check itself failed: cron and CI can tell them apart.
        return crate::audit_cli::run(command).unwrap_or_else(|e| {
            eprintln!("keyless: error: {e:#}");
            ExitCode::from(2)
        });
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyless: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: JSON lines when asked (`KEYLESS_LOG_FORMAT=json`, or `log.format` in the
/// configuration of `serve`), otherwise text with colour only on a terminal. `KEYLESS_LOG` is the
/// level filter (default `info`).
fn init_logging(configured: keyless_config::LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let format = match std::env::var("KEYLESS_LOG_FORMAT") {
        Ok(v) => keyless_config::LogFormat::parse(&v).unwrap_or_else(|e| {
            eprintln!("keyless: KEYLESS_LOG_FORMAT: {e}; using text");
            keyless_config::LogFormat::Text
        }),
        Err(_) => configured,
    };
    let filter = EnvFilter::try_from_env("KEYLESS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        keyless_config::LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        keyless_config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Servers log in the format their configuration names, so they start logging once it is read.
    let server = matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Ctlog {
                command: CtlogCommand::Serve { .. }
            }
    );
    if !server {
        init_logging(keyless_config::LogFormat::default());
    }
    match cli.command {
        Command::Serve {
            config,
            dev,
            listen,
            data_dir,
            ct_log,
        } => {
            let mut config = if dev {
                let dir = std::env::current_dir()?.join(data_dir);
                let mut c = Config::dev(dir);
                if ct_log == "disabled" {
                    c.ct_log = keyless_config::CtLogConfig::Disabled;
                }
                if let (Some(l), keyless_config::CtLogConfig::Embedded(e)) = (listen, &mut c.ct_log) {
                    // A free API port means a free CT port too (tests, benchmarks, parallel runs).
                    if l.port() == 0 {
                        e.listen.set_port(0);
                    }
                }
                c
            } else {
                let path = config.context("--config is required")?;
                Config::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            };
            if let Some(l) = listen {
                config.listen = l;
            }
            init_logging(config.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                crate::serve::serve(config, listener, crate::serve::shutdown_signal()).await
            })
        }
        Command::Ca {
            command:
                CaCommand::Init {
                    config,
                    algorithm,
                    root_only,
                    intermediate_from,
                },
        } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            if let keyless_config::CaConfig::Pkcs11(p) = &cfg.ca {
                if algorithm != keyless_ca::KeySpec::EcdsaP256 {
                    bail!(
                        "--algorithm {}: the PKCS#11 ceremony creates ECDSA P-256 issuing keys only",
                        algorithm.name()
                    );
                }
                let mode = match (root_only, intermediate_from) {
                    (true, _) => keyless_hsm::CeremonyMode::RootOnly,
                    (false, Some(root)) => {
                        let root_cfg = Config::load(&root).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
                        let keyless_config::CaConfig::Pkcs11(r) = root_cfg.ca else {
                            bail!("--intermediate-from {}: its `ca:` must be `pkcs11`", root.display());
                        };
                        keyless_hsm::CeremonyMode::IntermediateFrom(r)
                    }
                    (false, None) => keyless_hsm::CeremonyMode::Full,
                };
                let ct_label = match &cfg.ct_log {
                    keyless_config::CtLogConfig::Embedded(e) => e.pkcs11_key_label.as_deref(),
                    _ => None,
                };
                let report = keyless_hsm::init_pkcs11_ca(p, &CaNames::default(), SystemTime::now(), &mode, ct_label)?;
                println!(
                    "token:                 {} (module {})",
                    p.token_label,
                    p.module.display()
                );
                for k in &report.record.keys {
                    println!(
                        "{:<8} key:          {} (id {}, {}, sensitive, never extractable)",
                        k.role, k.label, k.id, k.algorithm
                    );
                }
                println!("chain:                 {}", p.chain.display());
                for c in &report.record.certificates {
                    println!("{} SHA-256: {}", c.role, c.sha256);
                }
                println!("ceremony record:       {}", report.record_path.display());
                return Ok(());
            }
            if root_only || intermediate_from.is_some() {
                bail!("--root-only and --intermediate-from need `ca.pkcs11` (an offline root lives in a token)");
            }
            let Some(file) = cfg.ca.key_file() else {
                bail!("ca: `{}` has no key file to initialise", cfg.ca.backend());
            };
            let report = keyless_hsm::init_file_ca(&file, &CaNames::default(), algorithm, SystemTime::now())?;
            println!("issuing key:   {} ({})", file.key.display(), algorithm.name());
            println!("chain:         {}", file.chain.display());
            println!(
                "root key:      {} (move it offline; it is only needed to issue a new intermediate)",
                report.root_key_path
            );
            println!("root SHA-256:          {}", report.root_sha256);
            println!("intermediate SHA-256:  {}", report.intermediate_sha256);
            Ok(())
        }
        Command::Config {
            command:
                ConfigCommand::Check {
                    file,
                    token,
                    online,
                    json,
                    strict,
                },
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let (report, ok) = rt.block_on(crate::check::run(&file, token.as_deref(), online, strict));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::check::render(&report));
            }
            if !ok {
                bail!("check failed");
            }
            Ok(())
        }
        Command::TrustedRoot {
            config,
            client_config,
            ca_url,
            ct_url,
            rekor_url,
        } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            let urls = crate::trust::Urls { ca: ca_url, ct: ct_url };
            let doc = if client_config {
                crate::trust::client_trust_config(&cfg, &urls, rekor_url.as_deref())?
            } else {
                crate::trust::trusted_root(&cfg, &urls)?
            };
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Command::Ctlog {
            command: CtlogCommand::Serve { config },
        } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            init_logging(cfg.log_format);
            let keyless_config::CtLogConfig::Embedded(settings) = cfg.ct_log.clone() else {
                bail!("ct_log: `keyless ctlog serve` runs the embedded log; set ct_log: embedded");
            };
            let chain_path = cfg.ca.chain_path();
            let chain =
                std::fs::read_to_string(chain_path).with_context(|| format!("reading {}", chain_path.display()))?;
            let roots: Vec<Vec<u8>> = keyless_ca::pipeline::parse_pem_chain(&chain)?
                .into_iter()
                .last()
                .into_iter()
                .collect();
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async move {
                let server = crate::serve::start_embedded_log(&cfg, &settings, &roots).await?;
                crate::serve::shutdown_signal().await;
                server.shutdown().await;
                Ok(())
            })
        }
        // Handled in `main` for its exit codes; kept here so the match stays exhaustive.
        Command::Audit { command } => crate::audit_cli::run(command).map(|_| ()),
        Command::Dev {
            command:
                DevCommand::Token {
                    email,
                    sub,
                    url,
                    data_dir,
                    ttl,
                },
        } => {
            if ttl == 0 || ttl > 24 * 3600 {
                bail!("--ttl must be between 1 and 86400 seconds");
            }
            let issuer = DevIssuer::open(&data_dir, &url)?;
            let sub = sub.unwrap_or_else(|| email.clone());
            println!("{}", issuer.mint(&email, &sub, ttl)?);
            Ok(())
        }
    }
}
