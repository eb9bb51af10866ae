//! The README is part of the contract: a new user copies its commands
//! literally. These checks pin what outside testing found broken there.

const README: &str = include_str!("../README.md");

/// `RUST_LOG=tcp_reactor::reactor::conn=trace` alone silences every other line
/// (`listening on` and `All done.` included): each example that filters a
/// module must name a base level first.
#[test]
fn every_rust_log_example_keeps_the_info_lines() {
    let mut seen = 0;
    for (at, _) in README.match_indices("RUST_LOG=") {
        let value: String = README[at + "RUST_LOG=".len()..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '`')
            .collect();
        seen += 1;
        let directives: Vec<&str> = value.split(',').collect();
        if directives.iter().any(|d| d.contains('=')) {
            assert!(
                directives.iter().any(|d| !d.contains('=')),
                "`RUST_LOG={value}` filters a module without a base level: \
                 every other line, `All done.` included, disappears"
            );
        }
    }
    assert!(seen > 0, "the README no longer shows RUST_LOG");
}

/// A paragraph inside a markdown table ends it: the rows after it render
/// as plain text. Every row of the Tests table must be contiguous, and
/// every test file must have its row.
#[test]
fn the_tests_table_is_one_table_listing_every_test_file() {
    let section = README
        .split("\n## Tests\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a `## Tests` section");
    let lines: Vec<&str> = section.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("| file |"))
        .expect("the tests table");
    let rows: Vec<&str> = lines[first..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .copied()
        .collect();
    let after: Vec<&str> = lines[first + rows.len()..]
        .iter()
        .filter(|l| l.starts_with("| `tests/") || l.starts_with("| `cli/tests/"))
        .copied()
        .collect();
    assert!(after.is_empty(), "rows cut off from the table: {after:?}");

    // The library's tests, and the binary's (which need it built).
    for dir in ["tests", "cli/tests"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&path).expect("a tests folder") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".rs") {
                let cell = format!("| `{dir}/{name}` |");
                assert!(
                    rows.iter().any(|r| r.starts_with(&cell)),
                    "{dir}/{name} has no row in the README's Tests table"
                );
            }
        }
    }
}

/// The library snippet must print something when run: the library logs
/// through `log`, which is silent until a logger is installed.
#[test]
fn the_library_snippet_sets_up_a_logger() {
    let section = README
        .split("\n## Using the library\n")
        .nth(1)
        .expect("a `## Using the library` section");
    let snippet = section
        .split("```rust")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a rust snippet");
    assert!(
        snippet.contains("env_logger::") && snippet.contains(".init()"),
        "the snippet runs silently:\n{snippet}"
    );
    let logger = snippet.find("env_logger::").unwrap_or(usize::MAX);
    let bind = snippet.find("Server::bind").unwrap_or(0);
    assert!(logger < bind, "the logger must be set up before the server");
}

/// The metrics table documents every counter of the one list
/// (`reactor::stats::COUNTERS`): each family, and each of its label values
/// in its row.
#[test]
fn the_metrics_table_names_every_counter_of_the_list() {
    let rows: Vec<&str> = README
        .lines()
        .filter(|l| l.starts_with("| `tcp_reactor_"))
        .collect();
    for counter in tcp_reactor::base::counters::COUNTERS {
        let row = rows
            .iter()
            .find(|r| {
                r.contains(&format!("`{}`", counter.family))
                    || r.contains(&format!("`{}{{", counter.family))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} has no row in the README's metrics table",
                    counter.family
                )
            });
        if let Some((_, value)) = counter.label {
            assert!(
                row.contains(&format!("`{value}`")),
                "{value} is missing from {row}"
            );
        }
    }
}

/// The access log's fields are declared once, in the code
/// (`access_log::Field`); the README's table of them must say the same,
/// row for row.
#[test]
fn the_access_log_field_table_is_the_code_s_list() {
    use tcp_reactor::obs::access_log::Field;
    let expected: Vec<String> = Field::ALL
        .iter()
        .map(|f| format!("| `{}` | {} |", f.key(), f.meaning()))
        .collect();
    let section = README
        .split("\n### Access log\n")
        .nth(1)
        .expect("an `### Access log` section");
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| field | what |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(
        rows,
        expected,
        "the README's access-log fields differ from access_log::Field; the table should read:\n{}",
        expected.join("\n")
    );
}
