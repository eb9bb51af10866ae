//! The Go tutorial's model as a comparison server: building it, and where it is.
//!
//! Owns: `go build` of `benches/echo/go/echo.go` into `target/go/` at bench time (its
//! GOCACHE and GOPATH there too, `GOPROXY=off`: standard library only, no network), and
//! the built binary's path. Must not: run it (that is [`crate::server`], which sets
//! `GOMAXPROCS` to the server CPUs). Valgrind does not run Go programs well, so it has no
//! instructions-per-message figure.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The source, next to this file.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/echo/go/echo.go");

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// The built server; `None` until [`build`] succeeded.
pub fn binary() -> Option<&'static PathBuf> {
    BINARY.get()
}

/// `target/go`, next to the profile directory cargo built tcp-reactor into.
fn dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tcp-reactor"));
    bin.parent()
        .and_then(|profile| profile.parent())
        .map(|target| target.join("go"))
        .unwrap_or_else(|| PathBuf::from("target/go"))
}

/// Build the Go server (once per run); the error says why it cannot be.
pub fn build() -> Result<&'static PathBuf, String> {
    if let Some(b) = BINARY.get() {
        return Ok(b);
    }
    let out = crate::build::go_build(SOURCE, &dir(), "go-echo")?;
    Ok(BINARY.get_or_init(|| out))
}
