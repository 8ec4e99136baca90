//! Many servers first started together on one fresh data dir (issue 9, item 7): the secret and
//! the API key are created once, atomically, and every process uses what the winner wrote;
//! the SQLite file is created once and every process opens it. Before, some servers exited
//! with "secret must be at least 16 characters" or "database is locked", and some started with
//! an empty API key.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::BIN;
use serde_json::{json, Value};

const SERVERS: usize = 20;
const ROUNDS: usize = 3;

struct Started {
    child: Child,
    /// `Ok(url)` once it listens, `Err(stderr)` when it exited first.
    outcome: mpsc::Receiver<Result<String, String>>,
}

fn spawn(dir: &std::path::Path) -> Started {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .current_dir(dir.parent().unwrap_or(dir))
        .env_remove("REALTIME_API_KEY")
        .env_remove("REALTIME_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("realtime serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(Ok(url.to_string()));
                return;
            }
        }
        // stdout closed without the line: the process ended; say why.
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send(Err(err));
    });
    Started { child, outcome: rx }
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_on_a_fresh_data_dir_share_one_key_and_secret() {
    let http = reqwest::Client::new();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut started: Vec<Started> = (0..SERVERS).map(|_| spawn(&data)).collect();
        let mut urls = Vec::new();
        let mut failures = Vec::new();
        for s in &mut started {
            match s.outcome.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(url)) => urls.push(url),
                Ok(Err(stderr)) => failures.push(stderr),
                Err(_) => failures.push("no `listening on` line within 60 s".into()),
            }
        }
        let key_file = std::fs::read_to_string(data.join("api_key")).expect("the api_key file");
        let secret_file = std::fs::read_to_string(data.join("secret")).expect("the secret file");
        let outcome = async {
            assert!(
                failures.is_empty(),
                "round {round}: {} of {SERVERS} servers failed to start: {failures:#?}",
                failures.len()
            );
            assert_eq!(key_file.len(), 48, "round {round}: {key_file:?}");
            assert_eq!(
                secret_file.len(),
                64,
                "round {round}: the secret file holds the secret only, no newline: {secret_file:?}"
            );
            // Every server accepts the key in the file, and hashes a channel the same way
            // (so all of them use the secret in the file).
            let mut hashes = Vec::new();
            for url in &urls {
                let res = http
                    .post(format!("{url}/api/subscribe"))
                    .bearer_auth(&key_file)
                    .json(&json!({"channel": {"contextid": 1, "component": "mod_x", "area": "a"}, "user": 2}))
                    .send()
                    .await
                    .expect("subscribe");
                assert_eq!(res.status(), 200, "round {round}: {url} refused the key in the file");
                let body: Value = res.json().await.expect("json");
                hashes.push(body["channel"].as_str().expect("hash").to_string());
            }
            hashes.dedup();
            assert_eq!(hashes.len(), 1, "round {round}: servers disagree on the secret");
        }
        .await;
        for s in &mut started {
            terminate(&mut s.child);
        }
        outcome
    }
}

/// A secret file written by hand with a trailing newline still reads as the same secret.
#[tokio::test]
async fn a_secret_file_with_a_newline_reads_the_same() {
    let http = reqwest::Client::new();
    let mut hashes = Vec::new();
    for text in [
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef\n",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secret"), text).expect("write");
        let mut s = spawn(dir.path());
        let url = s
            .outcome
            .recv_timeout(Duration::from_secs(60))
            .expect("an outcome")
            .expect("it starts");
        let key = std::fs::read_to_string(dir.path().join("api_key")).expect("api_key");
        let body: Value = http
            .post(format!("{url}/api/subscribe"))
            .bearer_auth(&key)
            .json(
                &json!({"channel": {"contextid": 1, "component": "mod_x", "area": "a"}, "user": 2}),
            )
            .send()
            .await
            .expect("subscribe")
            .json()
            .await
            .expect("json");
        hashes.push(body["channel"].clone());
        terminate(&mut s.child);
    }
    assert_eq!(hashes[0], hashes[1]);
    assert!(hashes[0].is_string());
}
