//! Runs one fuzz property: replays the saved regressions, then feeds generated inputs to the
//! check under a time bound and a hang watchdog, saves a failing input, and reports figures.
//!
//! Knobs (environment):
//! - `KEYLESS_FUZZ_CASES`: generated inputs per target (default [`DEFAULT_CASES`]);
//! - `KEYLESS_FUZZ_SECONDS`: stop a target after this long even if cases remain;
//! - `KEYLESS_FUZZ_REPORT`: append one tab-separated line per target to this file
//!   (`target inputs accepted seconds failures slowest_ms`), which `scripts/fuzz.sh` turns into
//!   a table.
//!
//! Failing inputs are saved as hex under `tests/fuzz-regressions/<target>/` and replayed first on
//! every run. They are exact bytes rather than proptest's RNG seeds because the seeds are made
//! afresh each run (new keys, new certificates), so a seed would not reproduce an input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::mutate::Input;

/// Generated inputs per target when `KEYLESS_FUZZ_CASES` is unset: small enough that the whole
/// file stays well under a minute in a debug build on two cores.
pub(crate) const DEFAULT_CASES: u64 = 256;

/// A case running this long is a hang: the watchdog saves it and aborts the process (a hung
/// parser cannot be interrupted from inside).
const HANG: Duration = Duration::from_secs(30);

/// What a check says about one input: `Ok(true)` if the parser accepted it (so the output
/// invariants were checked), `Ok(false)` if it refused it cleanly, `Err` naming a broken property.
pub(crate) type Verdict = Result<bool, String>;

fn regressions_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-regressions")
        .join(target)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// Saves a failing input; returns where.
fn save(target: &str, input: &[u8], why: &str) -> PathBuf {
    let dir = regressions_dir(target);
    let _ = std::fs::create_dir_all(&dir);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input);
    let path = dir.join(format!("{}.hex", &to_hex(digest.as_ref())[..16]));
    let why = why.lines().next().unwrap_or("").chars().take(200).collect::<String>();
    let body: Vec<String> = to_hex(input)
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let _ = std::fs::write(&path, format!("# {target}: {why}\n{}\n", body.join("\n")));
    path
}

/// Runs `check` on one input under the time bound: a slow run is retried twice and the fastest
/// counts, so a descheduled thread on a busy machine is not mistaken for a slow parser.
fn timed(check: &dyn Fn(&[u8]) -> Verdict, input: &[u8], bound: Duration) -> (Verdict, Duration) {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let verdict = match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(v) => v,
            Err(panic) => Err(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        };
        best = best.min(started.elapsed());
        if verdict.is_err() {
            return (verdict, best);
        }
        if best <= bound {
            return (verdict, best);
        }
    }
    (
        Err(format!(
            "took {} ms (fastest of 3 runs), over the bound of {} ms",
            best.as_millis(),
            bound.as_millis()
        )),
        best,
    )
}

/// The case in progress: when it started, and its input.
type Current = Arc<Mutex<Option<(Instant, Vec<u8>)>>>;

/// Watches the case in progress and aborts the process if one hangs, saving its input first.
struct Watchdog {
    current: Current,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(target: &'static str) -> Watchdog {
        let current: Current = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let guard = c.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((since, input)) = guard.as_ref()
                    && since.elapsed() > HANG
                {
                    let path = save(target, input, "hang");
                    eprintln!(
                        "fuzz {target}: an input has run for over {} s: saved to {}; aborting",
                        HANG.as_secs(),
                        path.display()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { current, done }
    }

    fn enter(&self, input: &[u8]) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), input.to_vec()));
    }

    fn leave(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Fuzzes `check` with `strategy`: regressions first, then generated inputs. Panics (failing the
/// test) on the first input that breaks the property, after proptest has shrunk it.
pub(crate) fn fuzz<S>(target: &'static str, bound: Duration, strategy: S, check: impl Fn(&[u8]) -> Verdict)
where
    S: Strategy<Value = Input>,
{
    let started = Instant::now();
    let watchdog = Watchdog::start(target);
    let check: &dyn Fn(&[u8]) -> Verdict = &check;
    let inputs = AtomicU64::new(0);
    let accepted = AtomicU64::new(0);
    let slowest = Mutex::new(Duration::ZERO);
    let last_failure: Mutex<Option<Vec<u8>>> = Mutex::new(None);

    let run_one = |input: &[u8]| -> Verdict {
        watchdog.enter(input);
        let (verdict, took) = timed(check, input, bound);
        watchdog.leave();
        inputs.fetch_add(1, Ordering::Relaxed);
        if verdict == Ok(true) {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = slowest.lock().unwrap_or_else(|p| p.into_inner());
        *s = (*s).max(took);
        if verdict.is_err() {
            *last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(input.to_vec());
        }
        verdict
    };

    // Saved regressions, exactly as they failed.
    let mut saved: Vec<PathBuf> = std::fs::read_dir(regressions_dir(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    saved.sort();
    for path in saved.iter().filter(|p| p.extension().is_some_and(|e| e == "hex")) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let input = from_hex(&text).unwrap_or_else(|| panic!("{}: not hex", path.display()));
        if let Err(why) = run_one(&input) {
            report(target, &inputs, &accepted, started, 1, &slowest);
            panic!("fuzz {target}: saved regression {} fails again: {why}", path.display());
        }
    }

    // Generated inputs, in chunks so that a time budget can end the run between them.
    let total = env_u64("KEYLESS_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let deadline = env_u64("KEYLESS_FUZZ_SECONDS").map(|s| started + Duration::from_secs(s));
    let mut generated = 0u64;
    while generated < total && deadline.is_none_or(|d| Instant::now() < d) {
        let chunk = (total - generated).min(2000);
        let mut runner = TestRunner::new(Config {
            cases: chunk as u32,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        });
        let result = runner.run(&strategy, |input: Input| {
            run_one(&input.0).map(|_| ()).map_err(TestCaseError::fail)
        });
        generated += chunk;
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, minimal)) => {
                let bytes = last_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or(minimal.0.clone());
                let path = save(target, &bytes, &why.to_string());
                report(target, &inputs, &accepted, started, 1, &slowest);
                panic!(
                    "fuzz {target}: {why}\nminimal input: {minimal:?}\nsaved to {} (replayed first from now on)",
                    path.display()
                );
            }
            Err(e) => panic!("fuzz {target}: {e}"),
        }
    }
    report(target, &inputs, &accepted, started, 0, &slowest);
}

fn report(
    target: &str,
    inputs: &AtomicU64,
    accepted: &AtomicU64,
    started: Instant,
    failures: u32,
    slowest: &Mutex<Duration>,
) {
    let inputs = inputs.load(Ordering::Relaxed);
    let accepted = accepted.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let slowest = slowest.lock().unwrap_or_else(|p| p.into_inner()).as_secs_f64() * 1000.0;
    println!(
        "fuzz {target}: {inputs} inputs ({accepted} accepted) in {secs:.1} s, {failures} failures, slowest {slowest:.1} ms"
    );
    if let Ok(path) = std::env::var("KEYLESS_FUZZ_REPORT") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{target}\t{inputs}\t{accepted}\t{secs:.2}\t{failures}\t{slowest:.1}");
        }
    }
}
