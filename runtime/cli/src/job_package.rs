//! `ray job submit --working-dir DIR`: the folder zipped as Ray's client zips
//! it (skipping `.git`, `__pycache__`, `excludes`, and what `.gitignore` and
//! `.rayignore` files name), named by a hash of its content
//! (`gcs://_ray_pkg_<hash>.zip`), so an unchanged folder is uploaded once.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The largest package the dashboard accepts (as Ray).
pub const MAX_PACKAGE_BYTES: usize = 512 * 1024 * 1024;
const IGNORE_FILES: [&str; 2] = [".gitignore", ".rayignore"];
const ALWAYS_EXCLUDED: [&str; 2] = [".git", "__pycache__"];

/// A zipped folder and its package name (`_ray_pkg_<hash>.zip`).
pub struct Package {
    /// `_ray_pkg_<hash>.zip`.
    pub name: String,
    /// The zip file's bytes.
    pub data: Vec<u8>,
}

/// Zips `dir` (`excludes`: gitignore-style patterns from the runtime_env).
pub fn make(dir: &Path, excludes: &[String]) -> Result<Package> {
    if !dir.is_dir() {
        bail!("--working-dir {}: not a folder", dir.display());
    }
    let files =
        list_files(dir, excludes).with_context(|| format!("--working-dir {}", dir.display()))?;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut total = 0usize;
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        for (rel, full) in &files {
            let body =
                std::fs::read(full).with_context(|| format!("cannot read {}", full.display()))?;
            total += body.len();
            if total >= MAX_PACKAGE_BYTES {
                bail!(
                    "--working-dir {}: the package is larger than {} MiB; leave large files out with .gitignore, \
                     .rayignore or the runtime_env's `excludes`",
                    dir.display(),
                    MAX_PACKAGE_BYTES >> 20
                );
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(full)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o644);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(mode)
                .last_modified_time(zip::DateTime::default());
            zip.start_file(rel.as_str(), opts)?;
            zip.write_all(&body)?;
        }
        zip.finish()?;
    }
    let data = buf.into_inner();
    let digest = Sha256::digest(&data);
    Ok(Package {
        name: format!("_ray_pkg_{}.zip", hex::encode(&digest[..8])),
        data,
    })
}

/// (path inside the package, file) for every file kept, in a fixed order.
fn list_files(root: &Path, excludes: &[String]) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    walk(root, "", excludes, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    rel_dir: &str,
    inherited: &[String],
    out: &mut Vec<(String, PathBuf)>,
) -> std::io::Result<()> {
    let mut patterns = inherited.to_vec();
    for f in IGNORE_FILES {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            patterns.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if rel_dir.is_empty() {
            name.clone()
        } else {
            format!("{rel_dir}/{name}")
        };
        let kind = e.file_type()?;
        let path = e.path();
        let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
        if is_dir {
            if ALWAYS_EXCLUDED.contains(&name.as_str()) || ignored(&rel, &name, true, &patterns) {
                continue;
            }
            walk(&path, &rel, &patterns, out)?;
        } else if path.is_file() && !ignored(&rel, &name, false, &patterns) {
            out.push((rel, path));
        }
    }
    Ok(())
}

/// gitignore-style matching: a pattern with a `/` is anchored to the package's
/// root, one without matches the name at any depth, a trailing `/` only folders.
fn ignored(rel: &str, name: &str, is_dir: bool, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let dir_only = p.ends_with('/');
        let pat = p.trim_end_matches('/');
        if dir_only && !is_dir {
            return false;
        }
        if pat.contains('/') {
            let pat = pat.trim_start_matches('/');
            glob(pat, rel) || (is_dir && glob(&format!("{pat}/*"), rel))
        } else {
            glob(pat, name)
        }
    })
}

/// `*`, `?` and `[...]` (with `!` or `^`) matching of a whole string.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class in the pattern).
        let mut i = 1;
        let negate = matches!(p.get(1), Some('!') | Some('^'));
        if negate {
            i += 1;
        }
        let mut hit = false;
        let start = i;
        while i < p.len() && (p[i] != ']' || i == start) {
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                hit |= p[i] <= c && c <= p[i + 2];
                i += 3;
            } else {
                hit |= p[i] == c;
                i += 1;
            }
        }
        (i < p.len()).then_some((hit != negate, i + 1))
    }
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|k| go(&p[1..], &t[k..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') if !t.is_empty() => match class(p, t[0]) {
                Some((true, len)) => go(&p[len..], &t[1..]),
                Some((false, _)) => false,
                None => t[0] == '[' && go(&p[1..], &t[1..]),
            },
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_fnmatch() {
        assert!(glob("*.py", "a.py"));
        assert!(!glob("*.py", "a.pyc"));
        assert!(glob("data[0-9].csv", "data7.csv"));
        assert!(!glob("data[!0-9].csv", "data7.csv"));
        assert!(glob("a?c", "abc"));
    }

    #[test]
    fn packages_skip_ignored_files_and_are_named_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("pkg/__pycache__")).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("main.py"), "import pkg").unwrap();
        std::fs::write(d.join("pkg/helper.py"), "X = 1").unwrap();
        std::fs::write(d.join("pkg/__pycache__/helper.pyc"), "x").unwrap();
        std::fs::write(d.join("data/big.bin"), "x").unwrap();
        std::fs::write(d.join("notes.log"), "x").unwrap();
        std::fs::write(d.join(".gitignore"), "*.log\n").unwrap();
        let files: Vec<String> = list_files(d, &["data/".to_string()])
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(files, [".gitignore", "main.py", "pkg/helper.py"]);
        let a = make(d, &[]).unwrap();
        let b = make(d, &[]).unwrap();
        assert_eq!(a.name, b.name, "the same content has the same name");
        assert!(a.name.starts_with("_ray_pkg_") && a.name.ends_with(".zip"));
        std::fs::write(d.join("main.py"), "import pkg  # changed").unwrap();
        assert_ne!(make(d, &[]).unwrap().name, a.name);
    }
}
