//! The saved login: `unbox login` writes the server, the client's credentials and the CA
//! certificate to a JSON file only its owner can read (mode 0600, in a 0700 directory); the
//! admin commands use it when no credentials are given. The access token is cached there too,
//! and reused while it is valid. `unbox logout` removes the file.
//!
//! Location: `--config FILE` (`UNBOX_CONFIG`), else `unbox/config.json` in the user's config
//! directory (`$XDG_CONFIG_HOME`, else `~/.config` on Linux).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The saved login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub server: String,
    pub client_id: String,
    pub client_secret: String,
    /// A PEM file of CA certificates to trust for this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// The last access token, reused until shortly before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<StoredToken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredToken {
    pub access_token: String,
    /// Unix time in seconds.
    pub expires_at: i64,
}

/// The default location of the file.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("unbox").join("config.json"))
}

/// The file's path: the one given, else the default.
pub fn path(given: Option<&Path>) -> Result<PathBuf, CliError> {
    match given {
        Some(path) => Ok(path.to_owned()),
        None => default_path().ok_or_else(|| {
            CliError::failure(
                "cannot find the user's config directory (set XDG_CONFIG_HOME or HOME, or pass --config)",
            )
        }),
    }
}

/// Reads the saved login, if there is one.
pub fn load(path: &Path) -> Result<Option<Config>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::failure(format!(
                "cannot read the login file {}: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        CliError::failure(format!(
            "the login file {} is not valid ({e}); run `unbox logout` and `unbox login` again",
            path.display()
        ))
    })
}

/// Writes the login file atomically, readable by its owner only.
pub fn save(path: &Path, config: &Config) -> Result<(), CliError> {
    let fail = |what: &str, e: std::io::Error| {
        CliError::failure(format!("cannot {what} {}: {e}", path.display()))
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| fail("create the directory of", e))?;
    let text = serde_json::to_string_pretty(config)?;
    let mut file = tempfile::Builder::new()
        .prefix(".config-")
        .tempfile_in(dir)
        .map_err(|e| fail("write", e))?;
    // `tempfile` creates the file with mode 0600 already; say so explicitly all the same.
    set_private(file.path()).map_err(|e| fail("write", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| fail("write", e))?;
    file.persist(path).map_err(|e| fail("write", e.error))?;
    Ok(())
}

/// Removes the login file; false when there was none.
pub fn remove(path: &Path) -> Result<bool, CliError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::failure(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The server URL in its canonical form for comparison: no trailing slash.
pub fn canonical_server(server: &str) -> String {
    server.trim().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("config.json");
        assert_eq!(load(&path).unwrap(), None);
        let config = Config {
            server: "https://unbox.example".into(),
            client_id: "id".into(),
            client_secret: "secret".into(),
            ca_cert: None,
            token: None,
        };
        save(&path, &config).unwrap();
        assert_eq!(load(&path).unwrap(), Some(config));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }
}
