//! The folders of `src/` are layers, and imports only go down.
//!
//! ```text
//!   process    the main goroutine's job: supervisor, upgrade, activation, cli
//!      │
//!   forward    the TCP proxy: pairs of sockets, upstreams, splice
//!      │
//!   reactor    one loop: server, conn, listener, timer, signals, admission, config
//!      │
//!   io · proto · obs    the byte path's stages · sans-IO protocols · what an operator sees
//!      │                (side by side: none of the three imports another)
//!   mailbox    messages between connections and loops
//!      │
//!   base       close reasons, limits, counters, errors, formatting
//! ```
//!
//! This test reads every file under `src/` and fails on a `crate::…` path
//! (or a `super::…` that climbs out of its layer) that names a layer beside
//! or above the file's own. Comments are skipped: a doc link may point
//! anywhere. The order is the one docs/ARCHITECTURE.md draws.

use std::fs;
use std::path::{Path, PathBuf};

/// Each layer and its height: a file may name layers lower than its own.
const LAYERS: &[(&str, u8)] = &[
    ("base", 0),
    ("mailbox", 1),
    ("io", 2),
    ("proto", 2),
    ("obs", 2),
    ("reactor", 3),
    ("forward", 4),
    ("process", 5),
];

fn height(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, h)| *h)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `src/io/tls/session.rs` is
/// `["io", "tls", "session"]`, `src/io/mod.rs` is `["io"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a line, without a trailing `//` comment (a `//` inside a
/// string, as in `http://`, is kept: only one outside quotes ends the code).
fn code_of(line: &str) -> &str {
    let mut in_str = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// `mod tests {`, `pub(crate) mod driver {`: a module written inline.
fn is_inline_mod(code: &str) -> bool {
    let code = code
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("pub ");
    code.starts_with("mod ") && code.trim_end().ends_with('{')
}

/// The layers a line of `module` names: after `crate::`, or where a
/// `super::` chain climbs out to the crate root.
fn layers_named(module: &[String], code: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `tcp_reactor::` or `my_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        named.push(name);
    }
    // `super::super::x` from `io::tls::session` climbs to `io`: still the
    // same layer; only a chain that reaches the root names another.
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("super::") {
            continue; // counted from the first `super::` of the chain
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            up += 1;
            rest = r;
        }
        // The parent of a file's module is one `super` up; a `mod.rs`
        // module's own children are not files here, so this is exact for
        // the layout we have (one level of `mod tests` aside, which stays
        // inside its file's layer).
        if up >= module.len() {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.push(name);
        }
    }
    named
}

#[test]
fn every_use_of_crate_goes_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let module = module_path(&src, file);
        let Some(own) = module
            .first()
            .and_then(|m| height(m).map(|h| (m.clone(), h)))
        else {
            continue; // lib.rs, main.rs: the top, may name anything
        };
        let text = fs::read_to_string(file).expect("a source file is readable");
        // Inline `mod x { … }` blocks (tests, say) add a level that a
        // `super::` climbs first: their indents, innermost last.
        let mut inline: Vec<usize> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.starts_with("//") {
                continue;
            }
            if trimmed == "}" && inline.last() == Some(&indent) {
                inline.pop();
            }
            if is_inline_mod(trimmed) {
                inline.push(indent);
            }
            let mut here = module.clone();
            here.extend(inline.iter().map(|_| "{inline}".to_owned()));
            for layer in layers_named(&here, code_of(line)) {
                checked += 1;
                if layer == own.0 {
                    continue;
                }
                let ok = height(&layer).is_some_and(|h| h < own.1);
                if !ok {
                    wrong.push(format!(
                        "{}:{}: {} (height {}) names {layer}: {}",
                        file.strip_prefix(&src).unwrap_or(file).display(),
                        n + 1,
                        own.0,
                        own.1,
                        trimmed
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} paths found: is the scan broken?"
    );
    assert!(
        wrong.is_empty(),
        "{} imports go up or sideways (layers, low to high: {:?}):\n{}",
        wrong.len(),
        LAYERS,
        wrong.join("\n")
    );
}

/// Every folder of `src/` is a layer the test knows: a new folder must be
/// given its place in the order (and in docs/ARCHITECTURE.md).
#[test]
fn every_folder_of_src_is_a_known_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in fs::read_dir(&src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            assert!(
                height(&name).is_some(),
                "src/{name}/ is not in the layer order of tests/layers.rs"
            );
        }
    }
}

/// The scan itself: what it counts as naming a layer.
#[test]
fn the_scan_reads_paths_not_comments_or_strings() {
    let m = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        layers_named(&m(&["io", "tls"]), "use crate::reactor::conn::X;"),
        ["reactor"]
    );
    assert_eq!(
        layers_named(&m(&["io", "tls", "session"]), "use super::super::stack;"),
        Vec::<String>::new()
    );
    assert_eq!(
        layers_named(&m(&["io", "stack"]), "use super::super::proto::X;"),
        ["proto"]
    );
    assert!(layers_named(&m(&["io"]), "use tcp_reactor::proto;").is_empty());
    assert_eq!(
        code_of("let url = \"http://x\"; // crate::proto"),
        "let url = \"http://x\"; "
    );
}
