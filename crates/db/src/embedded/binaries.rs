//! Finding PostgreSQL's server binaries (`initdb`, `pg_ctl`, `postgres`).
//!
//! Order: `UNBOX_PG_BIN` alone when it is set; else every `PATH` entry holding all three; else
//! the distribution layouts, newest version first. The three must come from one directory, so
//! that `initdb` and `postgres` are always the same release.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::EmbeddedError;

/// The message for a machine without the server binaries: says exactly what to install.
pub(super) const NOT_FOUND_HELP: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them, \
     e.g. `apt-get install postgresql` on Debian/Ubuntu, `dnf install postgresql-server` on \
     Fedora/RHEL, `brew install postgresql@16` on macOS, or set DATABASE_URL to use an \
     existing server, or UNBOX_PG_BIN to their directory";

const NAMES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Where distributions put versioned server binaries: `<parent>/<prefix><version>/bin`.
pub(super) const DISTRIBUTION_LAYOUTS: &[(&str, &str)] = &[
    ("/usr/lib/postgresql", ""), // Debian, Ubuntu: /usr/lib/postgresql/16/bin
    ("/usr", "pgsql-"),          // RHEL, Fedora (PGDG): /usr/pgsql-16/bin
    ("/opt/homebrew/opt", "postgresql"), // Homebrew on Apple silicon: postgresql@16
    ("/usr/local/opt", "postgresql"), // Homebrew on Intel
];

/// A directory holding the three server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub dir: PathBuf,
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
    pub postgres: PathBuf,
}

impl PgBinaries {
    /// The binaries in `dir`, when all three are there and executable. Symbolic links are
    /// resolved (pg_ctl finds `postgres` beside its own resolved path, and the log shows where
    /// the binaries really are).
    pub(super) fn in_dir(dir: &Path) -> Option<PgBinaries> {
        let mut paths = Vec::with_capacity(NAMES.len());
        for name in NAMES {
            let path = dir.join(name);
            if !is_executable(&path) {
                return None;
            }
            paths.push(fs::canonicalize(&path).unwrap_or(path));
        }
        let mut paths = paths.into_iter();
        let (initdb, pg_ctl, postgres) = (paths.next()?, paths.next()?, paths.next()?);
        let dir = postgres
            .parent()
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
        Some(PgBinaries {
            dir,
            initdb,
            pg_ctl,
            postgres,
        })
    }

    fn missing_in(dir: &Path) -> Vec<&'static str> {
        NAMES
            .into_iter()
            .filter(|name| !is_executable(&dir.join(name)))
            .collect()
    }

    /// `postgres --version`'s major version ("15", or "9.6" before PostgreSQL 10). postgres
    /// answers `--version` before its refusal to run as root, so this runs as the caller.
    pub(super) async fn major_version(&self) -> Result<String, EmbeddedError> {
        let output = tokio::process::Command::new(&self.postgres)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| EmbeddedError::Io {
                context: format!("running {} --version", self.postgres.display()),
                source,
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        match (output.status.success(), parse_major_version(&text)) {
            (true, Some(major)) => Ok(major),
            _ => Err(EmbeddedError::Command {
                program: format!("{} --version", self.postgres.display()),
                status: output.status.to_string(),
                output: super::command_output(&output),
            }),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The candidate directories, best first. `pg_bin` (UNBOX_PG_BIN) excludes every other place:
/// an explicit setting that does not work is an error, not a hint to look elsewhere.
pub(super) fn candidates(
    pg_bin: Option<&Path>,
    path_var: Option<&OsStr>,
    layouts: &[(&str, &str)],
) -> Result<Vec<PgBinaries>, EmbeddedError> {
    if let Some(dir) = pg_bin {
        return match PgBinaries::in_dir(dir) {
            Some(found) => Ok(vec![found]),
            None => Err(EmbeddedError::BinariesNotInPgBin {
                dir: dir.to_path_buf(),
                missing: PgBinaries::missing_in(dir).join(", "),
            }),
        };
    }
    let mut found: Vec<PgBinaries> = Vec::new();
    let mut push = |candidate: Option<PgBinaries>| {
        if let Some(candidate) = candidate
            && !found.iter().any(|known| known.dir == candidate.dir)
        {
            found.push(candidate);
        }
    };
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(path_var).filter(|dir| dir.is_absolute()) {
            push(PgBinaries::in_dir(&dir));
        }
    }
    for (parent, prefix) in layouts {
        for dir in versioned_dirs(Path::new(parent), prefix) {
            push(PgBinaries::in_dir(&dir));
        }
    }
    if found.is_empty() {
        Err(EmbeddedError::BinariesNotFound)
    } else {
        Ok(found)
    }
}

/// `<parent>/<prefix>*/bin`, the highest version first.
fn versioned_dirs(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut dirs: Vec<(Vec<u64>, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let rest = name.strip_prefix(prefix)?;
            let version = parse_version(rest.trim_start_matches(['@', '-']))?;
            Some((version, name, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    dirs.into_iter().map(|(_, _, dir)| dir).collect()
}

/// "16" → [16], "9.6" → [9, 6], "" (unversioned, e.g. Homebrew's `postgresql`) → []; anything
/// else (e.g. `postgresql-common`) is not a version.
fn parse_version(text: &str) -> Option<Vec<u64>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split('.').map(|part| part.parse().ok()).collect()
}

/// "postgres (PostgreSQL) 15.4 (Debian 15.4-1)" → "15"; "… 9.6.24" → "9.6"; "17devel" → "17".
pub(super) fn parse_major_version(text: &str) -> Option<String> {
    let after = text
        .split_once(')')
        .map_or(text, |(_, rest)| rest)
        .trim_start();
    let numeric: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|part| !part.is_empty());
    let first: u64 = parts.next()?.parse().ok()?;
    if first >= 10 {
        Some(first.to_string())
    } else {
        let second: u64 = parts.next()?.parse().ok()?;
        Some(format!("{first}.{second}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_bin_dir(dir: &Path, names: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for name in names {
            let path = dir.join(name);
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    #[test]
    fn major_versions() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some("15".into())
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 9.6.24"),
            Some("9.6".into())
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 17devel"),
            Some("17".into())
        );
        assert_eq!(parse_major_version("garbage"), None);
    }

    #[test]
    fn pg_bin_is_exclusive_and_explains_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fake_bin_dir(&bin, &["initdb", "pg_ctl"]);
        let err = candidates(Some(&bin), None, &[]).unwrap_err();
        assert!(err.to_string().contains("missing: postgres"), "{err}");
        fake_bin_dir(&bin, &["postgres"]);
        let found = candidates(Some(&bin), None, &[]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].dir, fs::canonicalize(&bin).unwrap());
    }

    #[test]
    fn path_first_then_newest_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_bin_dir(&root.join("lib/9.6/bin"), &NAMES);
        fake_bin_dir(&root.join("lib/15/bin"), &NAMES);
        fake_bin_dir(&root.join("lib/16/bin"), &NAMES);
        fake_bin_dir(&root.join("lib/17/bin"), &["initdb"]); // incomplete: skipped
        fake_bin_dir(&root.join("lib/common/bin"), &NAMES); // not a version: skipped
        fake_bin_dir(&root.join("path-a"), &["pg_ctl"]); // incomplete: skipped
        fake_bin_dir(&root.join("path-b"), &NAMES);
        let lib = root.join("lib");
        let lib = lib.to_str().unwrap();
        let path_var = std::env::join_paths([root.join("path-a"), root.join("path-b")]).unwrap();
        let found = candidates(None, Some(&path_var), &[(lib, "")]).unwrap();
        let dirs: Vec<_> = found.iter().map(|b| b.dir.clone()).collect();
        let canonical = |p: &str| fs::canonicalize(root.join(p)).unwrap();
        assert_eq!(
            dirs,
            [
                canonical("path-b"),
                canonical("lib/16/bin"),
                canonical("lib/15/bin"),
                canonical("lib/9.6/bin")
            ]
        );
    }

    #[test]
    fn nothing_found_says_what_to_install() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().as_os_str();
        let err = candidates(None, Some(empty), &[]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(
            message.contains("dnf install postgresql-server"),
            "{message}"
        );
        assert!(message.contains("brew install postgresql@16"), "{message}");
        assert!(
            message.contains("DATABASE_URL") && message.contains("UNBOX_PG_BIN"),
            "{message}"
        );
    }
}
