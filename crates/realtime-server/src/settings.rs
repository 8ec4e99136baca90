//! Loading settings: defaults, then `realtime.toml` (when given), then the environment
//! (`REALTIME_<SECTION>_<KEY>` for every key of every section, plus the fixed names
//! `REALTIME_API_KEY`, `REALTIME_SECRET`, `REALTIME_ENGINE_URL`), then command-line flags.
//! This is the only place that reads the environment.

use std::path::Path;

use realtime::Config;
use toml::Value;

/// Environment variables the loader looks at, taken as a snapshot so tests can pass their own.
pub(crate) type Env = Vec<(String, String)>;

/// Reads `file` (when given) over the defaults, then applies `env`.
///
/// # Errors
/// A message naming the file, section or variable that is wrong.
pub(crate) fn load(file: Option<&Path>, env: &Env) -> Result<Config, String> {
    let mut table =
        Value::try_from(Config::default()).map_err(|e| format!("default settings: {e}"))?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let given: Value = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        merge(&mut table, given, "").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    apply_env(&mut table, env)?;
    let config: Config = table.try_into().map_err(|e| format!("settings: {e}"))?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Lays `given` over `base`, refusing sections and keys that do not exist (a typo should not be
/// silently ignored). Maps that are open-ended (`webhooks.components`) take any key.
fn merge(base: &mut Value, given: Value, path: &str) -> Result<(), String> {
    match (base, given) {
        (Value::Table(base), Value::Table(given)) => {
            for (k, v) in given {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match base.get_mut(&k) {
                    Some(slot) if here == "webhooks.components" => *slot = v,
                    Some(slot) => merge(slot, v, &here)?,
                    None if path == "webhooks.components" => {
                        base.insert(k, v);
                    }
                    None => return Err(format!("unknown setting `{here}`")),
                }
            }
            Ok(())
        }
        (slot, v) => {
            *slot = v;
            Ok(())
        }
    }
}

fn apply_env(table: &mut Value, env: &Env) -> Result<(), String> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Value::Table(sections) = table else {
        return Err("settings are not a table".into());
    };
    for (section, keys) in sections.iter_mut() {
        let Value::Table(keys) = keys else { continue };
        for (key, slot) in keys.iter_mut() {
            let name = format!("REALTIME_{}_{}", section.to_uppercase(), key.to_uppercase());
            if let Some(text) = lookup(&name) {
                *slot = parse_like(slot, &text).map_err(|e| format!("{name}: {e}"))?;
            }
        }
    }
    if let Some(key) = lookup("REALTIME_API_KEY").filter(|k| !k.is_empty()) {
        if let Some(Value::Array(keys)) =
            sections.get_mut("auth").and_then(|a| a.get_mut("api_keys"))
        {
            keys.push(Value::String(key));
        }
    }
    Ok(())
}

/// Reads an environment value as the same type as the default it replaces: numbers and
/// booleans as such, lists as comma-separated text, anything else as text.
fn parse_like(slot: &Value, text: &str) -> Result<Value, String> {
    Ok(match slot {
        Value::Integer(_) => Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a whole number"))?,
        ),
        Value::Boolean(_) => Value::Boolean(match text.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("{text:?} is not true or false")),
        }),
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
        ),
        Value::Table(_) => {
            return Err("a table cannot be set from the environment; use the config file".into())
        }
        _ => Value::String(text.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_each_key() {
        let c = load(
            None,
            &env(&[
                ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "0"),
                ("REALTIME_ENGINE_URL", "memory://"),
                ("REALTIME_AUTH_ALLOW_GUESTS", "true"),
                ("REALTIME_COMPONENTS_ENABLED", "mod_a, mod_b"),
                ("REALTIME_API_KEY", "k1"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.poll.request_timeout_secs, 0);
        assert_eq!(c.engine.url, "memory://");
        assert!(c.auth.allow_guests);
        assert_eq!(c.components.enabled, vec!["mod_a", "mod_b"]);
        assert_eq!(c.auth.api_keys, vec!["k1"]);
        assert!(load(
            None,
            &env(&[("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "soon")])
        )
        .is_err());
        assert!(load(None, &env(&[("REALTIME_ENGINE_CHECK_INTERVAL_MS", "10")])).is_err());
    }

    #[test]
    fn file_refuses_unknown_keys_and_takes_webhooks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("realtime.toml");
        std::fs::write(&p, "[webhooks.components]\nmod_x = \"http://127.0.0.1:9/hook\"\n[poll]\nrequest_timeout_secs = 5\n").expect("write");
        let c = load(Some(&p), &Env::new()).expect("valid");
        assert_eq!(c.poll.request_timeout_secs, 5);
        assert_eq!(
            c.webhooks.components.get("mod_x").map(String::as_str),
            Some("http://127.0.0.1:9/hook")
        );
        std::fs::write(&p, "[poll]\nrequest_timeout = 5\n").expect("write");
        assert!(load(Some(&p), &Env::new())
            .expect_err("typo")
            .contains("poll.request_timeout"));
    }
}

#[cfg(test)]
mod sample {
    use super::*;

    /// The commented sample at the repository's root lists every setting at its default.
    #[test]
    fn the_sample_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../realtime.toml");
        let loaded = load(Some(&path), &Env::new()).expect("the sample loads");
        let as_toml = |c: &Config| toml::to_string(c).expect("serialises");
        assert_eq!(as_toml(&loaded), as_toml(&Config::default()));
        let text = std::fs::read_to_string(&path).expect("read");
        let given: Value = toml::from_str(&text).expect("toml");
        let defaults = Value::try_from(Config::default()).expect("defaults");
        for (section, keys) in defaults.as_table().expect("table") {
            for key in keys.as_table().expect("section").keys() {
                if section == "webhooks" && key == "components" {
                    continue;
                }
                assert!(
                    given.get(section).and_then(|s| s.get(key)).is_some(),
                    "the sample lacks {section}.{key}"
                );
            }
        }
    }
}
