//! The data dir: the SQLite file, and the secret and API key generated on first start
//! (files `secret` and `api_key`, mode 0600), unless `REALTIME_SECRET` / `REALTIME_API_KEY`
//! give them.
//!
//! Several processes may start on a fresh data dir at the same moment (two servers, a server
//! and a `realtime notify`). Each generated file is therefore written whole to a temporary file
//! of its own, flushed to disk, and then hard-linked to its name: `link` fails when the name
//! exists, so exactly one process wins, and every other one reads what the winner wrote. A
//! reader never sees a file half written (which made servers start with an empty API key, or
//! exit with "secret must be at least 16 characters").
//!
//! The files hold the text only, with no trailing newline, so that the secret's bytes are
//! exactly the HMAC key (`docs/protocol.md`); a file written by hand with a newline still reads
//! the same (surrounding whitespace is ignored).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use realtime::random_hex;
use realtime::Secret;

/// Reads the text in `dir/name`, or generates one with `make` and creates the file atomically
/// (mode 0600); when another process created it first, reads theirs. Returns the text and
/// whether this process generated it.
fn read_or_create(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), String> {
    let path = dir.join(name);
    if let Some(text) = read_existing(&path)? {
        return Ok((text, false));
    }
    create_private_dir(dir)?;
    let text = make();
    // A name of its own per attempt: two processes never write the same temporary file.
    let tmp = dir.join(format!(".{name}.{}.tmp", random_hex(8)));
    let written = write_private(&tmp, &text);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    });
    let _ = fs::remove_file(&tmp);
    if linked? {
        sync_dir(dir);
        return Ok((text, true));
    }
    // Another process won the race: its file is complete (it was linked after being written).
    match read_existing(&path)? {
        Some(text) => Ok((text, false)),
        None => Err(format!("{} vanished while being created", path.display())),
    }
}

/// The trimmed text of `path`; `None` when it does not exist.
fn read_existing(path: &Path) -> Result<Option<String>, String> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(format!(
            "{} is empty: remove it to have a new one generated",
            path.display()
        )),
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Writes `text` to a new file at `path`, mode 0600, and flushes it to disk.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Flushes a directory's entries, so that a new name survives a crash (best effort: not
/// every platform can open a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Many threads released at once on a fresh dir: one file, written once, and every thread
    /// reads the same complete text (before, a reader could see the file created but still
    /// empty, and a server started with an empty API key).
    #[test]
    fn concurrent_creators_all_read_the_winners_text() {
        const THREADS: usize = 16;
        for round in 0..100 {
            let dir = tempfile::tempdir().expect("tempdir");
            let data = dir.path().join("data");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (data, barrier) = (data.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        api_key(&data).map(|(key, _)| key)
                    })
                })
                .collect();
            let keys: Vec<String> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .expect("no panic")
                        .unwrap_or_else(|e| panic!("round {round}: {e}"))
                })
                .collect();
            assert_eq!(keys[0].len(), 48, "round {round}: {keys:?}");
            assert!(
                keys.iter().all(|k| k == &keys[0]),
                "round {round}: {keys:?}"
            );
            let file = fs::read_to_string(data.join("api_key")).expect("the file");
            assert_eq!(
                file, keys[0],
                "round {round}: the file holds the key, no newline"
            );
            // No temporary file is left behind.
            let names: Vec<_> = fs::read_dir(&data)
                .expect("read_dir")
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("api_key")]);
        }
    }
}
