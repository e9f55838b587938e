//! `keyless audit …`: the compliance reviewer's commands over the issuance record and CT logs.
//! Exit status: 0 nothing found, 1 findings (for cron and CI), 2 the check could not run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use keyless_audit::index::LogIndex;
use keyless_audit::query::{Filter, Format};
use keyless_audit::store::{Checkpoint, RecordSource, audit_dir, public_key_path, read_records_from};
use keyless_audit::sync::{StopReason, SyncLimits};
use keyless_audit::{CertSummary, state};
use keyless_config::{Config, CtLogConfig};

/// The `audit` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the issuance record's hash chain and every checkpoint signature.
    Verify {
        /// Configuration file (YAML): where the record is.
        #[arg(long)]
        config: PathBuf,
        /// The audit public key (PEM) to trust; default: the one next to the record. Pin a copy
        /// kept elsewhere: someone who can rewrite the record can also replace that file.
        #[arg(long)]
        audit_key: Option<PathBuf>,
        /// A signed checkpoint kept outside the record (`audit.checkpoint_export`, or a witness's
        /// copy of it): the record must contain that size with that head. Only this catches the
        /// last records removed together with their checkpoints.
        #[arg(long, value_name = "FILE")]
        against: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Follow an RFC 6962 log: verify its new tree head and its consistency with the last one,
    /// download the new entries and index the certificates this CA issued.
    Sync {
        /// Configuration file (YAML): the CA chain, and the log when `--log` is not given.
        #[arg(long)]
        config: PathBuf,
        /// The log's base URL (without `/ct/v1`).
        #[arg(long, requires = "log_key")]
        log: Option<String>,
        /// The log's public key (PEM).
        #[arg(long)]
        log_key: Option<PathBuf>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Entries fetched in this run at most; the next run resumes where it stopped.
        #[arg(long, default_value_t = SyncLimits::default().max_entries)]
        max_entries: u64,
        /// Time this run spends at most (`90s`, `10m`, `1h`); the next run resumes.
        #[arg(long, default_value = "10m", value_parser = keyless_config::parse_duration)]
        max_time: std::time::Duration,
    },
    /// Every issued certificate in the record is in the synced log, and every certificate in
    /// the log that chains to this CA is in the record.
    CrossCheck {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Find certificates (and with --rejected, refusals) in the issuance record.
    Query {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Glob over the identity (SAN), e.g. `*@example.com`.
        #[arg(long)]
        identity: Option<String>,
        /// OIDC issuer URL.
        #[arg(long)]
        issuer: Option<String>,
        /// Glob over the source repository.
        #[arg(long)]
        repository: Option<String>,
        /// Glob over the workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Build trigger (`push`, …).
        #[arg(long)]
        trigger: Option<String>,
        /// From this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Serial number (hex).
        #[arg(long)]
        serial: Option<String>,
        /// Include refused requests.
        #[arg(long)]
        rejected: bool,
        /// Include `intent` records (written before a precertificate goes to CT) and `abandoned`
        /// ones (issuances that did not complete).
        #[arg(long)]
        intents: bool,
        /// `table`, `csv` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// Report every certificate whose identity the watchlist does not expect from its issuer.
    Watch {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// The watchlist (YAML: `issuers: {URL: [identity globs]}`).
        #[arg(long)]
        watchlist: PathBuf,
        /// `log`: certificates found in synced CT logs (what the world sees); `record`: the
        /// issuance record.
        #[arg(long, default_value = "log", value_parser = ["log", "record"])]
        source: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// After the CA was replaced on purpose: bind the issuance record to this configuration's CA
    /// chain. Until then every replica (and every restart) with the new chain refuses to start, so
    /// a replica given the wrong key material cannot write a second CA's certificates into the
    /// record.
    AdoptCaChain {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Serve the read-only review page.
    Serve {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Listener; loopback by default.
        #[arg(long, default_value = "127.0.0.1:7300")]
        listen: SocketAddr,
        /// A file holding a bearer token the page then requires (header, or `?token=` once).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

fn load(config: &Path) -> anyhow::Result<(Config, PathBuf)> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let dir = audit_dir(&cfg.data_dir);
    Ok((cfg, dir))
}

/// The configuration, its audit directory (the public key, saved results, the CT index) and
/// where its record is (SQLite there, or PostgreSQL).
fn load_source(config: &Path) -> anyhow::Result<(Config, PathBuf, RecordSource)> {
    let (cfg, dir) = load(config)?;
    let source = crate::serve::record_source(&cfg)?;
    Ok((cfg, dir, source))
}

fn pem_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::serve::read_public_key(path)
}

/// The CA chain (DER, issuing CA first) of a configuration.
fn ca_chain(cfg: &Config) -> anyhow::Result<Vec<Vec<u8>>> {
    let chain = cfg.ca.chain_path();
    let text = std::fs::read_to_string(chain).with_context(|| format!("reading {}", chain.display()))?;
    Ok(keyless_ca::pipeline::parse_pem_chain(&text)?)
}

fn time_arg(name: &str, v: Option<String>) -> anyhow::Result<Option<u64>> {
    v.map(|s| {
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
            .with_context(|| format!("--{name} {s:?} is not an RFC 3339 time such as 2026-11-25T10:00:00Z"))
    })
    .transpose()
}

fn findings(found: bool) -> ExitCode {
    if found { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// Runs one `audit` subcommand.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            config,
            audit_key,
            against,
            json,
        } => {
            let (_, dir, source) = load_source(&config)?;
            let key = pem_der(&audit_key.unwrap_or_else(|| public_key_path(&dir)))?;
            let anchor = against.as_deref().map(Checkpoint::read).transpose()?;
            let report =
                keyless_audit::verify::verify_source(&source, &key, anchor.as_ref()).with_context(
                    || match &against {
                        Some(f) => format!("checking against {}", f.display()),
                        None => "verifying the issuance record".into(),
                    },
                )?;
            let lines = match &report.first_bad {
                None => vec![format!(
                    "the issuance record verifies: {} records ({}), {} signed checkpoints{}",
                    report.records,
                    report.kinds_line(),
                    report.checkpoints,
                    match (&against, report.anchor) {
                        (Some(f), Some((size, _))) =>
                            format!("; it contains the checkpoint of size {size} in {}", f.display()),
                        _ => String::new(),
                    }
                )],
                Some((seq, why)) => vec![format!("record {seq}: {why}")],
            };
            state::save(&dir, "verify", report.first_bad.is_none(), lines.clone())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", lines.join("\n"));
            }
            Ok(findings(report.first_bad.is_some()))
        }
        AuditCommand::Sync {
            config,
            log,
            log_key,
            quiet,
            max_entries,
            max_time,
        } => {
            let (cfg, dir) = load(&config)?;
            let (url, spki) = match (log, log_key) {
                (Some(url), Some(key)) => (url, pem_der(&key)?),
                _ => match &cfg.ct_log {
                    CtLogConfig::Remote(r) => (r.url.clone(), pem_der(&r.public_key)?),
                    CtLogConfig::Embedded(e) if e.listen.port() != 0 => (
                        format!("http://{}/{}", e.listen, e.prefix),
                        keyless_ctlog::log_public_key(&cfg.data_dir.join("ctlog"))?,
                    ),
                    _ => bail!("name the log to follow with --log URL --log-key PEM"),
                },
            };
            let chain = ca_chain(&cfg)?;
            let index = LogIndex::open(&dir)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let limits = SyncLimits {
                max_entries,
                max_duration: max_time,
                ..SyncLimits::default()
            };
            let report = rt.block_on(keyless_audit::sync::sync_with_limits(
                &index, &url, &spki, &chain, !quiet, &limits,
            ))?;
            match report.stopped {
                None => println!(
                    "{url}: tree head of size {} verified (was {}); {} new entries, {} new certificates from this CA",
                    report.tree_size, report.previous_size, report.new_entries, report.new_certificates
                ),
                Some(why) => println!(
                    "{url}: {} of {} entries verified (was {}); {} new entries, {} new certificates from this CA; stopped at the {} ({}): run `keyless audit sync` again to continue",
                    report.tree_size,
                    report.signed_size,
                    report.previous_size,
                    report.new_entries,
                    report.new_certificates,
                    match why {
                        StopReason::EntryLimit => "entry limit",
                        StopReason::TimeLimit => "time limit",
                    },
                    match why {
                        StopReason::EntryLimit => format!("--max-entries {max_entries}"),
                        StopReason::TimeLimit => format!("--max-time {}s", max_time.as_secs()),
                    }
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::CrossCheck { config, json } => {
            let (_, dir, source) = load_source(&config)?;
            let records = read_records_from(&source)?;
            let index = LogIndex::open(&dir)?;
            if index.logs()?.is_empty() {
                bail!("no CT log has been synced yet: run `keyless audit sync` first");
            }
            let report = keyless_audit::crosscheck::cross_check(&records, &index)?;
            let lines = report.lines();
            state::save(&dir, "cross-check", report.ok(), lines.clone())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", lines.join("\n"));
            }
            Ok(findings(!report.ok()))
        }
        AuditCommand::Query {
            config,
            identity,
            issuer,
            repository,
            workflow,
            trigger,
            since,
            until,
            serial,
            rejected,
            intents,
            format,
        } => {
            let (_, _, source) = load_source(&config)?;
            let filter = Filter {
                identity,
                issuer,
                repository,
                workflow,
                trigger,
                since_ms: time_arg("since", since)?,
                until_ms: time_arg("until", until)?,
                serial,
                rejected,
                intents,
            };
            let records = read_records_from(&source)?;
            let selected = keyless_audit::query::select(&records, &filter);
            let format = match format.as_str() {
                "csv" => Format::Csv,
                "json" => Format::Json,
                _ => Format::Table,
            };
            print!("{}", keyless_audit::query::render(&selected, format));
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Watch {
            config,
            watchlist,
            source,
            json,
        } => {
            let (_, dir, record) = load_source(&config)?;
            let text =
                std::fs::read_to_string(&watchlist).with_context(|| format!("reading {}", watchlist.display()))?;
            let list = keyless_audit::watch::Watchlist::parse(&text)?;
            let certs: Vec<CertSummary> = if source == "record" {
                read_records_from(&record)?
                    .iter()
                    .filter_map(CertSummary::of_record)
                    .collect()
            } else {
                let index = LogIndex::open(&dir)?;
                if index.logs()?.is_empty() {
                    bail!("no CT log has been synced yet: run `keyless audit sync` first, or use --source record");
                }
                index.certificates()?.iter().map(|c| c.summary()).collect()
            };
            let found = keyless_audit::watch::check(&list, &certs);
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else if found.is_empty() {
                println!("{} certificates checked; all are expected", certs.len());
            } else {
                for f in &found {
                    println!("UNEXPECTED serial {}: {}", f.certificate.serial, f.why);
                }
            }
            Ok(findings(!found.is_empty()))
        }
        AuditCommand::AdoptCaChain { config } => {
            let (cfg, _, source) = load_source(&config)?;
            let chain = keyless_audit::store::CaChain::of(&ca_chain(&cfg)?);
            let previous = keyless_audit::store::adopt_ca_chain(&source, &chain)?;
            println!(
                "the issuance record in {} is bound to the CA chain SHA-256 {}{}",
                source.describe(),
                chain.fingerprints(),
                previous.map(|p| format!(" (it was {p})")).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Serve {
            config,
            listen,
            token_file,
        } => {
            let (cfg, dir, source) = load_source(&config)?;
            let token = token_file
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .map(|t| t.trim().to_string())
                        .with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            if token.as_deref().is_some_and(str::is_empty) {
                bail!("--token-file is empty");
            }
            if !listen.ip().is_loopback() && token.is_none() {
                bail!("the review page listens beyond loopback ({listen}) only with --token-file");
            }
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(keyless_review::serve(
                cfg,
                dir,
                source,
                listen,
                token,
                crate::serve::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyless_audit::record::{Decision, Record, Rejection};
    use keyless_audit::store::{AuditLog, AuditOptions};

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch() -> Scratch {
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!("keyless-audit-cli-{}", keyless_audit::record::hex(&random)));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn refusal(n: u64) -> Record {
        Record {
            seq: 0,
            time_ms: 1_700_000_000_000 + n,
            request_id: format!("r{n}"),
            issuer: None,
            subject: None,
            claims_sha256: None,
            key_sha256: None,
            decision: Decision::Rejected,
            rule: "token".into(),
            certificate: None,
            rejection: Some(Rejection {
                class: "token".into(),
                message: format!("refusal {n}"),
            }),
            intent: None,
            intent_seq: None,
        }
    }

    #[test]
    fn verify_against_an_anchor_catches_what_verify_alone_cannot() {
        let dir = scratch();
        let config = dir.0.join("keyless.yaml");
        std::fs::write(&config, "data_dir: data\n").unwrap();
        let record = audit_dir(&dir.0.join("data"));
        let anchor = dir.0.join("anchor.json");
        let log = AuditLog::open(
            &record,
            AuditOptions {
                checkpoint_export: Some(anchor.clone()),
                ..AuditOptions::default()
            },
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for n in 0..4 {
            rt.block_on(log.append_durable(refusal(n))).unwrap();
        }
        let stopped = log.stopped();
        drop(log);
        assert!(stopped.wait(std::time::Duration::from_secs(5)));
        let verify = |against: Option<&Path>| {
            run(AuditCommand::Verify {
                config: config.clone(),
                audit_key: None,
                against: against.map(Path::to_path_buf),
                json: false,
            })
            .unwrap()
        };
        assert_eq!(verify(None), ExitCode::SUCCESS);
        assert_eq!(verify(Some(&anchor)), ExitCode::SUCCESS);

        // The last two records removed together with the checkpoints that signed them.
        rusqlite::Connection::open(keyless_audit::store::db_path(&record))
            .unwrap()
            .execute_batch("DELETE FROM records WHERE seq >= 2; DELETE FROM checkpoints WHERE size > 2;")
            .unwrap();
        assert_eq!(
            verify(None),
            ExitCode::SUCCESS,
            "the shorter record is consistent in itself"
        );
        assert_eq!(verify(Some(&anchor)), ExitCode::from(1));
        let saved = state::load(&record, "verify").unwrap();
        assert!(!saved.ok);
        assert!(
            saved.lines[0].contains("removed together with their checkpoints"),
            "{:?}",
            saved.lines
        );
        // An unreadable anchor means the check could not run.
        std::fs::write(&anchor, "not json").unwrap();
        let err = run(AuditCommand::Verify {
            config: config.clone(),
            audit_key: None,
            against: Some(anchor.clone()),
            json: false,
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("not a checkpoint"), "{err:#}");
    }
}
