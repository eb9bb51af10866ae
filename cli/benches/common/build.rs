//! What the benches build at bench time, shared: the load generator
//! (`tools/load`, release) and Go programs (standard library only, no
//! network: `GOPROXY=off`, caches under `target/`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/release/tcp-reactor-load`, built once per run.
pub fn load_generator() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = option_env!("CARGO").unwrap_or("cargo");
            let status = Command::new(cargo)
                .args(["build", "--release", "--quiet", "-p", "tcp-reactor-load"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "building the load generator (cargo build --release -p tcp-reactor-load): {status:?}"
            );
            // A bench runs from target/release/deps/.
            let exe = std::env::current_exe().expect("the bench's own path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("target/release")
                .join("tcp-reactor-load")
        })
        .clone()
}

/// `go build -o dir/name source`, with its caches in `dir`; the error
/// says why it could not be built (`go` missing, a compile error).
pub fn go_build(source: &str, dir: &Path, name: &str) -> Result<PathBuf, String> {
    let out = dir.join(name);
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(source)
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .map_err(|_| "go not installed (scripts/install-test-tools.sh does not install it: apt-get install golang-go)".to_string())?;
    if !built.status.success() {
        return Err(format!(
            "go build {source} failed ({}): {}",
            built.status,
            String::from_utf8_lossy(&built.stderr).trim()
        ));
    }
    Ok(out)
}
