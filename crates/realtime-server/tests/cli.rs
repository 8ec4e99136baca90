//! The `realtime` binary as an operator and a cron job use it: zero-config start, notify from
//! another process, graceful shutdown.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{page, poll, Server, BIN};

use serde_json::json;

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn zero_config_start_makes_a_private_data_dir_and_stops_on_sigterm() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(cwd.path(), &["--listen", "127.0.0.1:0"], &[]);
    let data = cwd.path().join("realtime-data");
    for f in ["secret", "api_key", "realtime.db"] {
        assert!(data.join(f).exists(), "{f} is in the data dir");
    }
    assert_eq!(mode(&data.join("secret")), 0o600);
    assert_eq!(mode(&data.join("api_key")), 0o600);
    assert_eq!(mode(&data.join("realtime.db")), 0o600);
    let key = std::fs::read_to_string(data.join("api_key"))
        .expect("api key")
        .trim()
        .to_string();

    let http = reqwest::Client::new();
    let p = page(
        &http,
        &server.url,
        &key,
        42,
        json!({"contextid": 1, "component": "tool_realtime", "area": "test"}),
    )
    .await;
    // A long-poll (30 s by default) is open when SIGTERM arrives: it answers at once.
    let open = tokio::spawn({
        let (http, p) = (http.clone(), p.clone());
        async move { poll(&http, p["url"].as_str().expect("url"), &p, &p["cursor"]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("terminate");
    assert!(status.success(), "a clean exit: {status}");
    let answer = tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .expect("the poll ended")
        .expect("task");
    assert_eq!(answer["events"], json!([]));
    assert!(t.elapsed() < Duration::from_secs(8));

    // The same data dir on the next start: same secret, same key, same hashes.
    let server = Server::start(cwd.path(), &["--listen", "127.0.0.1:0"], &[]);
    let again = page(
        &http,
        &server.url,
        &key,
        42,
        json!({"contextid": 1, "component": "tool_realtime", "area": "test"}),
    )
    .await;
    assert_eq!(
        again["subscriptions"][0]["channel"],
        p["subscriptions"][0]["channel"]
    );
}

#[tokio::test]
async fn notify_from_another_process_reaches_a_waiting_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.to_str().expect("utf-8 path");
    let server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", data_s],
        &[
            ("REALTIME_API_KEY", "cron-key"),
            ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "20"),
        ],
    );
    let http = reqwest::Client::new();
    let p = page(
        &http,
        &server.url,
        "cron-key",
        42,
        json!({"contextid": 5, "component": "mod_quiz", "area": "grades", "itemid": 3}),
    )
    .await;
    let waiting = tokio::spawn({
        let (http, p) = (http.clone(), p.clone());
        async move { poll(&http, p["url"].as_str().expect("url"), &p, &p["cursor"]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let out = Command::new(BIN)
        .args([
            "notify",
            "--data-dir",
            data_s,
            "--context",
            "5",
            "--component",
            "mod_quiz",
            "--area",
            "grades",
            "--itemid",
            "3",
        ])
        .args(["--payload", r#"{"from":"cron"}"#])
        .output()
        .expect("realtime notify runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("it prints the id");

    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the poll answered")
        .expect("task");
    assert_eq!(answer["events"][0]["id"], id);
    assert_eq!(answer["events"][0]["payload"], json!({"from": "cron"}));
    assert_eq!(answer["events"][0]["itemid"], 3);
}

#[test]
fn notify_refuses_bad_input_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["notify", "--data-dir", data]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = run(
        &[
            "--context",
            "1",
            "--component",
            "mod_a",
            "--area",
            "x",
            "--payload",
            "{nope",
        ],
        &[],
    );
    assert!(!ok && err.contains("--payload is not valid JSON"), "{err}");
    let (ok, err) = run(
        &["--context", "1", "--component", "Mod-A", "--area", "x"],
        &[],
    );
    assert!(!ok && err.contains("component"), "{err}");
    let (ok, err) = run(
        &["--context", "1", "--component", "mod_a", "--area", "x"],
        &[("REALTIME_COMPONENTS_ENABLED", "mod_b")],
    );
    assert!(!ok && err.contains("disabled"), "{err}");
    let (ok, err) = run(
        &["--context", "1", "--component", "mod_a", "--area", "x"],
        &[("REALTIME_ENGINE_URL", "nats://x")],
    );
    assert!(!ok && err.contains("not available"), "{err}");
    let (ok, _) = run(
        &[
            "--context",
            "1",
            "--component",
            "mod_a",
            "--area",
            "x",
            "--payload",
            "[1,2]",
        ],
        &[],
    );
    assert!(ok);
}
