//! When log lines should carry the process id: while two processes write
//! to the same journal. (The binary's format, which asks, is in `cli/`.)
//!
//! During a `SIGUSR2` upgrade the old and the new process both log (the old
//! one drains while the new one serves), and their lines interleave in one
//! journal. From the moment an upgrade starts, the old process tags its
//! lines with `pid N`; a process started by an upgrade tags all of its own.
//! Outside an upgrade the tag would only be noise, so it is left out.

use std::sync::atomic::{AtomicBool, Ordering};

static SHOW_PID: AtomicBool = AtomicBool::new(false);

/// Whether log lines should say which process wrote them (a log format
/// asks, for each line).
pub fn pid_shown() -> bool {
    SHOW_PID.load(Ordering::Relaxed)
}

/// From now on, every line says which process wrote it (`pid N`).
pub(crate) fn show_pid() {
    SHOW_PID.store(true, Ordering::Relaxed);
}
