//! The demo page (`/demo`) in a real browser: the tests in `e2e/` at the repository root drive
//! Debian's headless Chromium with playwright-core under Node's test runner, against this build
//! of the `realtime` binary, so that `cargo test --workspace` runs them too.
//!
//! Needs Node.js 20+ with npm, and Chromium at `/usr/bin/chromium` (or `$CHROMIUM_PATH`).
//! A missing Chromium fails this test: CI installs it, and a skipped browser test would hide a
//! broken page. The files run side by side (`--test-concurrency=4`: Node runs one file at a time
//! on 2 cores otherwise), each test with its own server and browser: about 6 minutes, the
//! 5-minute renewal test of `e2e/renewal.test.mjs` (tokens of 60 s) beside the 90 s outages of
//! `e2e/outage.test.mjs`.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn demo_page_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = root.join("e2e");
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "the browser tests need Chromium at {chromium}, and it is missing: \
         `apt-get install -y chromium` (Debian), or set CHROMIUM_PATH"
    );

    if !e2e
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&e2e)
            .output()
            .expect("npm runs (install Node.js 20 or later with npm)");
        assert!(
            out.status.success(),
            "`npm ci` in e2e/ failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    common::run_node_tests(
        &root,
        &["--test-concurrency=4"],
        "e2e/",
        24,
        "the browser tests (screenshots in e2e/artifacts/)",
    );
}
