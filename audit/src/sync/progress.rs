//! Progress lines on stderr for `audit sync`: one updating line on a terminal, otherwise one
//! line per [`PROGRESS_EVERY`] entries.

/// Without a terminal, one progress line per this many entries.
const PROGRESS_EVERY: u64 = 10_000;

/// Where a run is, and whether to say so.
pub(super) struct Progress {
    enabled: bool,
    tty: bool,
    last: u64,
}

impl Progress {
    pub(super) fn new(enabled: bool, start: u64) -> Progress {
        use std::io::IsTerminal as _;
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last: start,
        }
    }

    fn line(done: u64, total: u64) -> String {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        format!("synced {done}/{total} entries ({pct}%)")
    }

    pub(super) fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        if self.tty {
            eprint!("\r{}", Self::line(done, total));
        } else if done / PROGRESS_EVERY > self.last / PROGRESS_EVERY {
            eprintln!("{}", Self::line(done, total));
        }
        self.last = done;
    }

    pub(super) fn finish(&self, started: u64, total: u64) {
        if self.enabled && self.tty && total > started {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        assert_eq!(Progress::line(256, 1024), "synced 256/1024 entries (25%)");
        assert_eq!(Progress::line(0, 0), "synced 0/0 entries (100%)");
    }
}
