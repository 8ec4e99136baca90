//! The data dir: the SQLite file, and the secret and API key generated on first start
//! (files `secret` and `api_key`, mode 0600), unless `REALTIME_SECRET` / `REALTIME_API_KEY`
//! give them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use realtime::secret::random_hex;
use realtime::Secret;

/// Reads the text in `dir/name`, or generates one with `make`, writes it with mode 0600 and
/// returns it. Returns whether it was generated.
fn read_or_create(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), String> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => return Ok((text.trim().to_string(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    }
    create_private_dir(dir)?;
    let text = make();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut f) => {
            f.write_all(format!("{text}\n").as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok((text, true))
        }
        // Another process (a concurrent `realtime notify`) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Ok((text.trim().to_string(), false))
        }
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// Creates `dir` (and its parents) when absent; a new data dir is readable by this user only.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// The secret: `REALTIME_SECRET` when set, else `dir/secret` (generated on first use).
pub(crate) fn secret(dir: &Path, from_env: Option<&str>) -> Result<Secret, String> {
    if let Some(text) = from_env.filter(|s| !s.is_empty()) {
        return Secret::from_text(text).map_err(|e| format!("REALTIME_SECRET: {e}"));
    }
    let (text, _) = read_or_create(dir, "secret", || random_hex(32))?;
    Secret::from_text(&text).map_err(|e| format!("{}: {e}", dir.join("secret").display()))
}

/// The generated API key in `dir/api_key`, and its path (used when `REALTIME_API_KEY` is unset).
pub(crate) fn api_key(dir: &Path) -> Result<(String, PathBuf), String> {
    let (key, _) = read_or_create(dir, "api_key", || random_hex(24))?;
    Ok((key, dir.join("api_key")))
}
