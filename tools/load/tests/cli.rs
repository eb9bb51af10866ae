//! The load generator introduces itself, not the server it loads.

use std::process::Command;

#[test]
fn help_describes_the_load_generator_not_the_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_tcp-reactor-load"))
        .arg("--help")
        .output()
        .expect("run tcp-reactor-load --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("load generator"), "{help}");
    assert!(!help.contains("event loop: the Go"), "{help}");
}
