//! The browser client's own tests (`clients/js/test/`), run under Node's test runner against
//! this build of the `realtime` binary, so that `cargo test --workspace` runs everything.
//! Node 20 has a global WebSocket only with `--experimental-websocket`.

mod common;

use std::path::Path;

#[test]
fn browser_client_tests_pass_under_node() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js");
    common::run_node_tests(
        &js,
        &["--experimental-websocket"],
        "test/",
        80,
        "the browser client's tests",
    );
}
