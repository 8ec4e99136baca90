//! What `serve` and `notify` share: settings, the data dir, the engine; and `notify` itself.

use std::path::PathBuf;
use std::sync::Arc;

use realtime::engine::{Engine, MemoryEngine, SqliteEngine};
use realtime::{Channel, Config, Realtime, Secret};
use serde_json::value::RawValue;

use crate::settings::{self, Env};
use crate::{datadir, Common, NotifyArgs};

/// Settings, data dir and secret, as every subcommand sees them.
pub(crate) struct Setup {
    pub(crate) config: Config,
    pub(crate) data_dir: PathBuf,
    pub(crate) secret: Secret,
}

pub(crate) fn setup(common: &Common, env: &Env, listen: Option<&str>) -> Result<Setup, String> {
    let mut config = settings::load(common.config.as_deref(), env)?;
    if let Some(dir) = &common.data_dir {
        config.server.data_dir = dir.display().to_string();
    }
    if let Some(listen) = listen {
        config.server.listen = listen.to_string();
    }
    let data_dir = PathBuf::from(&config.server.data_dir);
    datadir::create_private_dir(&data_dir)?;
    let from_env = env
        .iter()
        .find(|(k, _)| k == "REALTIME_SECRET")
        .map(|(_, v)| v.as_str());
    let secret = datadir::secret(&data_dir, from_env)?;
    Ok(Setup {
        config,
        data_dir,
        secret,
    })
}

/// Opens the engine named by `engine.url` (empty: the SQLite file in the data dir).
pub(crate) async fn open_engine(setup: &Setup) -> Result<Arc<dyn Engine>, String> {
    let url = setup.config.engine.url.trim();
    if url.is_empty() {
        let path = setup.data_dir.join("realtime.db");
        return open_sqlite(path).await;
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("engine url sqlite:// needs a path, such as sqlite://./realtime.db".into());
        }
        return open_sqlite(PathBuf::from(path)).await;
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let engine = realtime_postgres::PostgresEngine::connect(url)
            .await
            .map_err(|e| format!("engine {}: {e}", redact(url)))?;
        return Ok(Arc::new(engine));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let engine = realtime_redis::RedisEngine::connect(url)
            .await
            .map_err(|e| format!("engine {}: {e}", redact(url)))?;
        return Ok(Arc::new(engine));
    }
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(MemoryEngine::new()));
    }
    let scheme = url.split("://").next().unwrap_or(url);
    Err(format!("engine url {url:?}: the {scheme:?} engine is not available in this build (sqlite://PATH, postgres://…, redis://…, memory://)"))
}

pub(crate) async fn open_sqlite(path: PathBuf) -> Result<Arc<dyn Engine>, String> {
    let engine = SqliteEngine::open(&path)
        .await
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    private(&path)?;
    Ok(Arc::new(engine))
}

/// Makes the database file (and its WAL and shared-memory files) readable by this user only:
/// events may carry private data.
fn private(db: &std::path::Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("restricting {}: {e}", p.display()))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// `realtime notify`: append one event, print its id.
pub(crate) async fn notify(args: NotifyArgs, env: Env) -> Result<(), String> {
    let payload: Box<RawValue> = serde_json::from_str(&args.payload)
        .map_err(|e| format!("--payload is not valid JSON: {e}"))?;
    let channel = Channel::new(
        args.contextid,
        args.component,
        args.area,
        args.itemid,
        args.details,
    )
    .map_err(|e| e.to_string())?;
    let setup = setup(&args.common, &env, None)?;
    let engine = open_engine(&setup).await?;
    let rt = Realtime::start(setup.config, setup.secret, engine)
        .await
        .map_err(|e| e.to_string())?;
    let result = rt.notify_many(vec![(channel, payload)]).await;
    rt.shutdown().await;
    let ids = result.map_err(|e| e.to_string())?;
    for id in ids {
        println!("{}", id.get());
    }
    Ok(())
}

/// An engine URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
