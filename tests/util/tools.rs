//! System tools that some tests drive for real (curl, wrk, ab, redis-cli…).
//!
//! `scripts/install-test-tools.sh` installs them. A test that needs one asks
//! [`require`] first: without the tool it is skipped loudly, or fails when
//! `CI` is set, so a CI run can never pass by skipping.

use std::os::unix::fs::PermissionsExt;

/// Whether `tool` is on `PATH`. When it is not: with `CI` set, panic naming
/// the tool and the install script; otherwise print a `SKIP` line to stderr
/// and return false, so the caller returns early.
pub fn require(tool: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{tool} not installed (CI is set, so this fails instead of skipping); \
             run scripts/install-test-tools.sh"
        );
    }
    eprintln!("SKIP: {tool} not installed; run scripts/install-test-tools.sh");
    false
}

/// An executable file named `tool` in one of `PATH`'s directories.
fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        dir.join(tool)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
