//! The record's writer against real SQLite files: batching, failed commits, a full disk, the
//! audit key's location and the checkpoint anchor.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::hex::hex;
use crate::record::{Decision, Rejection, test_refusal};
use crate::verify::verify_dir;

fn spki(dir: &Path) -> Vec<u8> {
    read_spki_file(&public_key_path(dir)).unwrap()
}

pub(super) fn durable(seq: u64, what: &str) -> Record {
    let mut r = test_refusal(seq);
    r.decision = Decision::Intent;
    r.rejection = Some(Rejection {
        class: "test".into(),
        message: what.into(),
    });
    r
}

fn close(log: AuditLog) {
    let stopped = log.stopped();
    drop(log);
    assert!(stopped.wait(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_failed_batch_is_retried_without_its_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), AuditOptions::default()).unwrap();
    // A real SQLite trigger refuses any record mentioning "poison".
    let conn = Connection::open(db_path(dir.path())).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.json LIKE '%poison%'
             BEGIN SELECT RAISE(ABORT, 'poisoned record'); END;",
    )
    .unwrap();
    // Hold the write lock so the writer blocks on its first batch while the next one queues.
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let a = tokio::spawn({
        let log = log.clone();
        async move { log.append_durable(durable(0, "a")).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut poison = test_refusal(0);
    poison.request_id = "poison".into();
    log.append(poison);
    let b = tokio::spawn({
        let log = log.clone();
        async move { log.append_durable(durable(0, "b")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.execute_batch("COMMIT").unwrap();
    assert_eq!(a.await.unwrap().unwrap(), 0);
    assert_eq!(b.await.unwrap().unwrap(), 1, "b committed alone, right after a");
    assert_eq!(log.refusals_dropped(), 1);
    assert!(log.available());

    // A durable record that cannot be committed fails its waiter; the head does not move.
    let err = log.append_durable(durable(0, "poison")).await.unwrap_err();
    assert!(matches!(err, AuditError::Storage(_)), "{err}");
    assert!(err.to_string().contains("poisoned record"), "{err}");
    assert!(!log.available());
    assert_eq!(log.append_durable(durable(0, "c")).await.unwrap(), 2);
    assert!(log.available());
    close(log);
    let report = verify_dir(dir.path(), &spki(dir.path()), None).unwrap();
    assert_eq!((report.records, report.first_bad), (3, None));
    let messages: Vec<String> = read_records(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| r.rejection.unwrap().message)
        .collect();
    assert_eq!(messages, ["a", "b", "c"]);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }
}

#[tokio::test]
async fn a_full_disk_is_an_outage_that_ends_by_itself() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let fs = match Tmpfs::mount("3m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_is_an_outage_that_ends_by_itself: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let dir = fs.path.join("audit");
    let log = AuditLog::open(
        &dir,
        AuditOptions {
            refusal_queue: 8,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    assert_eq!(log.append_durable(durable(0, "before")).await.unwrap(), 0);

    // Fill the filesystem.
    let filler = fs.path.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
    }
    let big = "x".repeat(16 << 10);
    let mut committed = 0;
    let err = loop {
        match log.append_durable(durable(0, &big)).await {
            Ok(seq) => committed = seq,
            Err(e) => break e,
        }
        assert!(committed < 200, "the disk never filled");
    };
    assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(!log.available());
    // Still out: the next issuance fails fast too, and refusals never block.
    let again = log.append_durable(durable(0, &big)).await.unwrap_err();
    assert!(matches!(again, AuditError::Unavailable(_)), "{again}");
    let started = Instant::now();
    for i in 0..1000 {
        log.append(test_refusal(i));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    // All but the few in the queue or in the writer's hands (at most 8 a batch) are gone.
    assert!(log.refusals_dropped() >= 900, "{}", log.refusals_dropped());

    // Space returns: the chain continues right after the last committed record (queued
    // refusals may now be committed just before the durable one).
    std::fs::remove_file(&filler).unwrap();
    let seq = log.append_durable(durable(0, "after")).await.unwrap();
    assert!(log.available());
    close(log);
    // One line when the outage began, one when it ended: not one per request.
    assert_eq!(logs.lines_with("the issuance record cannot be written"), 1);
    assert_eq!(logs.lines_with("the issuance record is writable again"), 1);
    assert!(logs.lines_with("refusal records dropped") >= 1);
    let report = verify_dir(&dir, &spki(&dir), None).unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    let records = read_records(&dir).unwrap();
    assert_eq!(records.len() as u64, report.records);
    let last = &records[committed as usize].rejection.as_ref().unwrap().message;
    assert_eq!(last, if committed == 0 { "before" } else { big.as_str() });
    assert!(
        records[committed as usize + 1..seq as usize]
            .iter()
            .all(|r| r.decision == Decision::Rejected),
        "nothing durable was lost or duplicated in between"
    );
    assert_eq!(records[seq as usize].rejection.as_ref().unwrap().message, "after");
    assert_eq!(
        report.count("intent"),
        committed + 2,
        "every acknowledged durable record, once"
    );
}

#[tokio::test]
async fn the_audit_key_can_live_on_another_volume() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("audit.pem");
    let elsewhere = AuditOptions {
        key: Some(key.clone()),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(dir.path(), elsewhere.clone()).unwrap();
    log.append_durable(durable(0, "a")).await.unwrap();
    close(log);
    assert!(key.exists());
    assert!(!default_key_path(dir.path()).exists(), "no key beside the record");
    let report = verify_dir(dir.path(), &spki(dir.path()), None).unwrap();
    assert_eq!((report.records, report.first_bad), (1, None));

    // Forgetting where the key is: refused, and no new key is made beside the record.
    let err = AuditLog::open(dir.path(), AuditOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("restore the key"),
        "{err}"
    );
    assert!(!default_key_path(dir.path()).exists());
    // Another key fails the record's checkpoints, and the published public key stays.
    let other_key = keys.path().join("other.pem");
    keyless_ctlog::load_or_create_key(&other_key).unwrap();
    let other = AuditOptions {
        key: Some(other_key),
        ..AuditOptions::default()
    };
    let before = std::fs::read(public_key_path(dir.path())).unwrap();
    let err = AuditLog::open(dir.path(), other).unwrap_err().to_string();
    assert!(err.contains("valid audit key signature"), "{err}");
    assert_eq!(std::fs::read(public_key_path(dir.path())).unwrap(), before);
    // A public key file that is not the key's is refused rather than silently replaced.
    std::fs::write(public_key_path(dir.path()), pem_public_key(&[0x30, 0x00])).unwrap();
    let err = AuditLog::open(dir.path(), elsewhere.clone()).unwrap_err().to_string();
    assert!(err.contains("is not the public half"), "{err}");
    std::fs::remove_file(public_key_path(dir.path())).unwrap();
    close(AuditLog::open(dir.path(), elsewhere).unwrap());
    assert_eq!(std::fs::read(public_key_path(dir.path())).unwrap(), before);
}

#[tokio::test]
async fn the_anchor_catches_records_removed_together_with_their_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let witness = tempfile::tempdir().unwrap();
    let anchor = witness.path().join("checkpoint.json");
    let options = AuditOptions {
        checkpoint_export: Some(anchor.clone()),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(dir.path(), options.clone()).unwrap();
    for i in 0..5 {
        assert_eq!(log.append_durable(durable(0, &format!("r{i}"))).await.unwrap(), i);
    }
    close(log);
    let key = spki(dir.path());
    let cp = Checkpoint::read(&anchor).unwrap();
    assert_eq!(cp.size, 5);
    assert_eq!(cp.key_sha256, hex(&keyless_ca::keys::sha256(&key)));
    assert_eq!(Some(cp.clone()), latest_checkpoint(dir.path(), &key).unwrap());
    cp.verify(&key).unwrap();
    assert!(!witness.path().join("checkpoint.json.tmp").exists());
    assert_eq!(verify_dir(dir.path(), &key, Some(&cp)).unwrap().first_bad, None);

    // The last two records go, together with the checkpoints that signed them.
    let conn = Connection::open(db_path(dir.path())).unwrap();
    conn.execute_batch("DELETE FROM records WHERE seq >= 3; DELETE FROM checkpoints WHERE size > 3;")
        .unwrap();
    drop(conn);
    let alone = verify_dir(dir.path(), &key, None).unwrap();
    assert_eq!(
        (alone.records, alone.first_bad.clone()),
        (3, None),
        "undetectable from inside"
    );
    let against = verify_dir(dir.path(), &key, Some(&cp)).unwrap();
    let (pos, why) = against.first_bad.unwrap();
    assert_eq!(pos, 3);
    assert!(
        why.contains("records 3 to 4 were removed together with their checkpoints"),
        "{why}"
    );
    // The writer refuses to go on from a record that lost anchored records.
    let err = AuditLog::open(dir.path(), options).unwrap_err().to_string();
    assert!(
        err.contains("at record 3") && err.contains("anchored checkpoint"),
        "{err}"
    );

    // A checkpoint the audit key did not sign proves nothing: an error, not a finding.
    let mut forged = cp.clone();
    forged.size = 2;
    let err = verify_dir(dir.path(), &key, Some(&forged)).unwrap_err().to_string();
    assert!(err.contains("valid audit key signature"), "{err}");
    let mut other = cp.clone();
    other.key_sha256 = "00".repeat(32);
    let err = verify_dir(dir.path(), &key, Some(&other)).unwrap_err().to_string();
    assert!(err.contains("signed by audit key"), "{err}");
    std::fs::write(&anchor, "{}").unwrap();
    let err = Checkpoint::read(&anchor).unwrap_err().to_string();
    assert!(
        err.contains("checkpoint.json") && err.contains("not a checkpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn the_record_is_bound_to_the_ca_chain_of_its_first_writer() {
    let dir = tempfile::tempdir().unwrap();
    let with = |chain: &[&[u8]]| AuditOptions {
        ca_chain: Some(CaChain::of(&chain.iter().map(|c| c.to_vec()).collect::<Vec<_>>())),
        ..AuditOptions::default()
    };
    let first = with(&[b"issuing A", b"root"]);
    let log = AuditLog::open(dir.path(), first.clone()).unwrap();
    log.append_durable(durable(0, "a")).await.unwrap();
    close(log);
    // A restart with the same chain, and an opener that does not say, are both let in.
    close(AuditLog::open(dir.path(), first.clone()).unwrap());
    close(AuditLog::open(dir.path(), AuditOptions::default()).unwrap());

    // Another issuing CA under the same root is refused, naming both chains and the way out.
    let second = with(&[b"issuing B", b"root"]);
    let err = AuditLog::open(dir.path(), second.clone()).unwrap_err().to_string();
    let (a, b) = (
        first.ca_chain.as_ref().unwrap().fingerprints().to_string(),
        second.ca_chain.as_ref().unwrap().fingerprints().to_string(),
    );
    assert!(
        err.contains(&a) && err.contains(&b) && err.contains("keyless audit adopt-ca-chain"),
        "{err}"
    );
    assert!(
        a.ends_with(b.split(',').nth(1).unwrap()),
        "one fingerprint per certificate"
    );

    // Adopting the new chain on purpose: the new one is let in, the old one refused.
    let source = RecordSource::Sqlite(dir.path().to_path_buf());
    let previous = adopt_ca_chain(&source, second.ca_chain.as_ref().unwrap()).unwrap();
    assert_eq!(previous.as_deref(), Some(a.as_str()));
    assert_eq!(
        adopt_ca_chain(&source, second.ca_chain.as_ref().unwrap()).unwrap(),
        None,
        "no change"
    );
    close(AuditLog::open(dir.path(), second).unwrap());
    assert!(AuditLog::open(dir.path(), first).is_err());
    let report = verify_dir(dir.path(), &spki(dir.path()), None).unwrap();
    assert_eq!((report.records, report.first_bad), (1, None));
}
