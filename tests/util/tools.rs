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

/// Like [`require`], for something that is not a command on `PATH` (a
/// Python module): `present` says whether it is there.
pub fn require_that(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} not installed (CI is set, so this fails instead of skipping); \
             run scripts/install-test-tools.sh"
        );
    }
    eprintln!("SKIP: {what} not installed; run scripts/install-test-tools.sh");
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

/// A child tool (haproxy, redis-server…) whose stdout and stderr are kept
/// rather than printed, so a passing `cargo test` stays quiet (HAProxy
/// warns `… is DOWN` during a rolling restart, as designed). When the test
/// fails, dropping it prints everything the tool said, under its name.
pub struct Captured {
    /// The running tool.
    pub child: std::process::Child,
    name: String,
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Captured {
    /// Spawn `cmd` with both output streams captured line by line.
    pub fn spawn(name: &str, mut cmd: std::process::Command) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout piped")),
            Box::new(child.stderr.take().expect("stderr piped")),
        ];
        for stream in streams {
            let sink = std::sync::Arc::clone(&output);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Self {
            child,
            name: name.to_owned(),
            output,
        }
    }

    /// Everything the tool printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("---- {} said ({} lines) ----", self.name, output.len());
            for line in output.iter() {
                eprintln!("{line}");
            }
        }
    }
}
