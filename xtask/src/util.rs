//! Small file-system and output helpers shared by the commands.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Result;

/// Where progress lines go: stdout for the CLI, a buffer in tests.
pub(crate) trait Log {
    /// Prints one progress line.
    fn line(&mut self, line: &str);
}

/// Progress lines on stdout.
#[derive(Debug)]
pub(crate) struct StdoutLog;

impl Log for StdoutLog {
    fn line(&mut self, line: &str) {
        println!("{line}");
    }
}

/// Progress lines kept in memory (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct BufferLog(pub(crate) Vec<String>);

#[cfg(test)]
impl Log for BufferLog {
    fn line(&mut self, line: &str) {
        self.0.push(line.to_owned());
    }
}

/// Reads a UTF-8 file, with the path in the error.
pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Writes `contents` to `path` unless it already holds exactly that; returns whether it wrote.
pub(crate) fn write_if_changed(path: &Path, contents: &str) -> Result<bool> {
    if fs::read(path).ok().as_deref() == Some(contents.as_bytes()) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(true)
}

/// Creates a new file; fails (and leaves the existing file alone) if it already exists.
pub(crate) fn create_new(path: &Path, contents: &str) -> Result {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                format!(
                    "refusing to overwrite {} (it already exists)",
                    path.display()
                )
            } else {
                format!("cannot create {}: {e}", path.display())
            }
        })?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `path` relative to `root`, with `/` separators, for messages.
pub(crate) fn rel(root: &Path, path: &Path) -> String {
    let p = path.strip_prefix(root).unwrap_or(path);
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The sub-directories of `dir`, sorted (empty if `dir` does not exist).
pub(crate) fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every file under `dir`, recursively, sorted (empty if `dir` does not exist).
pub(crate) fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", d.display()))?;
            let ty = entry
                .file_type()
                .map_err(|e| format!("cannot stat {}: {e}", entry.path().display()))?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A fresh, uniquely named directory under the system temp dir, removed on drop unless kept.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<counter>-<nanos>`.
    pub(crate) fn new(prefix: &str) -> Result<TempDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path, keep: false })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A line diff of `old` → `new` (longest common subsequence), as `-`/`+` lines with two lines
/// of context around each change; used by `codegen --check`.
pub(crate) fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j] = length of the LCS of a[i..] and b[j..]
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 2;
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| *c != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut out = String::new();
    let mut last_printed: Option<usize> = None;
    for (k, (c, line)) in ops.iter().enumerate() {
        let near = changed.iter().any(|&x| x.abs_diff(k) <= CONTEXT);
        if !near {
            continue;
        }
        if let Some(l) = last_printed {
            if k > l + 1 {
                out.push_str("   ...\n");
            }
        }
        out.push_str(&format!("  {c} {line}\n"));
        last_printed = Some(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changes_with_context() {
        let d = diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nX\ne\nf\ng\n");
        assert_eq!(d, "    b\n    c\n  - d\n  + X\n    e\n    f\n");
        assert_eq!(diff("same\n", "same\n"), "");
    }

    #[test]
    fn create_new_refuses_to_overwrite() {
        let t = TempDir::new("xtask-util").unwrap();
        let p = t.path().join("f.txt");
        create_new(&p, "one").unwrap();
        let e = create_new(&p, "two").unwrap_err();
        assert!(e.contains("refusing to overwrite"), "{e}");
        assert_eq!(read(&p).unwrap(), "one");
        assert!(!write_if_changed(&p, "one").unwrap());
        assert!(write_if_changed(&p, "two").unwrap());
    }
}
