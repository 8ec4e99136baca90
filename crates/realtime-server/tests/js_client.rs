//! The browser client's own tests (`clients/js/test/`), run under Node's test runner against
//! this build of the `realtime` binary, so that `cargo test --workspace` runs everything.

use std::path::Path;
use std::process::Command;

#[test]
fn browser_client_tests_pass_under_node() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js");
    let out = Command::new("node")
        .args([
            "--experimental-websocket",
            "--test",
            "--test-reporter=spec",
            "test/",
        ])
        .current_dir(&js)
        .env("REALTIME_BIN", env!("CARGO_BIN_EXE_realtime"))
        .output()
        .expect("node runs (install Node.js 20 or later: .ci/run does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser client's tests failed:\n{stdout}\n{stderr}"
    );
    // The spec reporter ends with counts; make sure tests actually ran.
    let passed = stdout
        .lines()
        .find_map(|l| {
            l.trim_start_matches(|c: char| !c.is_ascii_alphabetic())
                .strip_prefix("pass ")
        })
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 5,
        "expected the client's tests to run, saw {passed} passing:\n{stdout}"
    );
}
