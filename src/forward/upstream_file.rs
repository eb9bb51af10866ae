//! `--upstream-file`: the upstream list in a file, one `IP:PORT` a line,
//! re-read on `SIGHUP`.
//!
//! The supervisor re-reads the file (one read, however many loops); each
//! loop notices the new list at its next accept (one atomic load) and
//! merges it into its own [`Upstreams`](super::upstreams::Upstreams):
//! added upstreams take new connections, removed ones take none but keep
//! their live connections until they end. A file that cannot be read or
//! holds no valid list keeps the old list, and the log says why.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why an upstream file was not taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// It could not be read.
    Unreadable(PathBuf, std::io::Error),
    /// It names no upstream.
    Empty(PathBuf),
    /// Line `line` (from 1) is not an `IP:PORT` address.
    BadLine {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What the line says.
        text: String,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Unreadable(path, e) => {
                write!(f, "cannot read the upstream file {}: {e}", path.display())
            }
            FileError::Empty(path) => {
                write!(f, "the upstream file {} names no upstream", path.display())
            }
            FileError::BadLine { path, line, text } => write!(
                f,
                "the upstream file {} line {line}: {text:?} is not an IP:PORT address",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FileError {}

/// Parse an upstream file's text: one address a line; blank lines and
/// `#` comments are skipped.
pub fn parse(path: &Path, text: &str) -> Result<Vec<SocketAddr>, FileError> {
    let mut list = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let addr = line.parse().map_err(|_| FileError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            text: line.to_owned(),
        })?;
        if !list.contains(&addr) {
            list.push(addr);
        }
    }
    if list.is_empty() {
        return Err(FileError::Empty(path.to_owned()));
    }
    Ok(list)
}

/// Read and parse the file at `path`.
pub fn read(path: &Path) -> Result<Vec<SocketAddr>, FileError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| FileError::Unreadable(path.to_owned(), e))?;
    parse(path, &text)
}

/// The file and the list last read from it, shared by the supervisor
/// (which re-reads it) and the loops (which take each new list once).
#[derive(Debug)]
pub struct UpstreamFile {
    path: PathBuf,
    generation: AtomicU64,
    list: Mutex<Vec<SocketAddr>>,
}

impl UpstreamFile {
    /// Read `path` once, now: a bad file is an error before anything starts.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        Ok(Self {
            path: path.to_owned(),
            generation: AtomicU64::new(0),
            list: Mutex::new(read(path)?),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The list as last read.
    pub fn list(&self) -> Vec<SocketAddr> {
        self.list.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many times a new list was taken (0: the first one).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Read the file again (`cause`: `SIGHUP`, for the log); a bad file
    /// keeps the list in use.
    pub fn reload(&self, cause: &str) {
        match read(&self.path) {
            Ok(list) => {
                let n = list.len();
                if let Ok(mut held) = self.list.lock() {
                    *held = list;
                }
                self.generation.fetch_add(1, Ordering::AcqRel);
                log::info!(
                    "{cause}: re-read {}: {n} upstream{}",
                    self.path.display(),
                    if n == 1 { "" } else { "s" }
                );
            }
            Err(e) => log::error!("{cause}: {e}; keeping the upstreams in use"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_one_a_line_with_comments_and_blank_lines() {
        let text = "# backends\n127.0.0.1:8001\n\n  [::1]:8002   # v6\n127.0.0.1:8001\n";
        let list = parse(Path::new("u"), text).unwrap();
        assert_eq!(
            list,
            [
                "127.0.0.1:8001".parse().unwrap(),
                "[::1]:8002".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_bad_line_or_an_empty_file_says_where() {
        let e = parse(Path::new("u.txt"), "127.0.0.1:1\nlocalhost:80\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the upstream file u.txt line 2: \"localhost:80\" is not an IP:PORT address"
        );
        let e = parse(Path::new("u.txt"), "# nothing\n\n").unwrap_err();
        assert_eq!(e.to_string(), "the upstream file u.txt names no upstream");
    }
}
