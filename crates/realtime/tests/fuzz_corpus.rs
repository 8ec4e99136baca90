//! The fuzz targets on the stable toolchain: every target's checked-in corpus (`fuzz/corpus/`),
//! then a few thousand proptest-generated inputs, through the same `realtime::fuzzing::check_*`
//! functions that the libFuzzer targets call. So the properties hold on machines without
//! nightly too; `fuzz/run.sh` adds the coverage-guided search where nightly is present.
//!
//! To rewrite the seed corpus after a change of its layout:
//! `cargo test -p realtime --test fuzz_corpus -- --ignored write_seed_corpus`.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use realtime::fuzzing::{self, TARGETS};
use serde_json::json;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// The seeds of every target, made from the fixed secret (so that they hold valid tokens).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let hash = fuzzing::seed_hash().to_string();
    let user = fuzzing::user_token();
    let sub = fuzzing::subscription_token();
    let channel = json!({"contextid": 1, "component": "mod_echo", "area": "room", "itemid": 7, "details": "details"});
    let with = |b: u8, rest: &[u8]| [&[b][..], rest].concat();
    let text = |s: String| s.into_bytes();
    let mut fields = Vec::new();
    fields.extend_from_slice(&1i64.to_le_bytes());
    fields.extend_from_slice(&7i64.to_le_bytes());
    fields.extend_from_slice(b"mod_quiz\xFFsubmissions\xFFdetails");
    let subscribe = json!({"type": "subscribe", "usertoken": user, "subscriptions": [{"channel": hash, "token": sub}], "cursor": "abc123:0"});
    let send = json!({"type": "send", "id": 1, "component": "mod_echo", "payload": {"text": "hi"}});
    let query = format!("usertoken={user}&channel={hash}&token={sub}&cursor=abc123:0");
    let sub_ref = json!([{"channel": hash, "token": sub}]);
    vec![
        ("parsers", "hash", with(0, hash.as_bytes())),
        ("parsers", "hash_bad", with(0, b"ABC")),
        ("parsers", "cursor", with(1, b"ab12:42")),
        (
            "parsers",
            "cursor_max",
            with(1, b"e-_x:9223372036854775807"),
        ),
        ("parsers", "user_token", with(2, user.as_bytes())),
        ("parsers", "subscription_token", with(2, sub.as_bytes())),
        ("parsers", "expired_token", with(2, b"v1.42.1.AAAA")),
        ("parsers", "channel_fields", with(3, &fields)),
        (
            "parsers",
            "channel_json",
            with(4, channel.to_string().as_bytes()),
        ),
        (
            "parsers",
            "channel_json_channeldetails",
            with(
                4,
                br#"{"contextid":-1,"component":"tool_x","area":"a","channeldetails":""}"#,
            ),
        ),
        ("ws_frame", "subscribe", text(subscribe.to_string())),
        ("ws_frame", "send", text(send.to_string())),
        ("ws_frame", "ping", text(r#"{"type":"ping"}"#.into())),
        ("sse_query", "query", text(query.clone())),
        (
            "sse_query",
            "no_cursor",
            text(format!("usertoken={user}&channel={hash}&token={sub}")),
        ),
        (
            "http",
            "notify",
            with(
                0,
                json!({"channel": channel, "payload": {"a": 1}})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "notify_batch",
            with(
                0,
                json!({"events": [{"channel": channel, "payload": [1, 2]}, {"channel": channel}]})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "page",
            with(
                1,
                json!({"user": 42, "channels": [channel]})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "subscribe",
            with(
                2,
                json!({"channel": channel, "user": 42})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "poll",
            with(
                3,
                json!({"subscriptions": sub_ref, "cursor": "abc123:0"})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "send",
            with(
                4,
                json!({"component": "mod_echo", "payload": {"x": 1}})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "send_refused",
            with(4, br#"{"component":"mod_refuse"}"#),
        ),
        (
            "http",
            "sse",
            with(5, format!("channel={hash}&token={sub}").as_bytes()),
        ),
        (
            "http",
            "notify_no_credential",
            with(
                6,
                json!({"channel": channel, "payload": 1})
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "http",
            "poll_wrong_credential",
            with(15, json!({"subscriptions": sub_ref}).to_string().as_bytes()),
        ),
        (
            "ws_session",
            "subscribed_send_ping",
            [
                &[1u8][..],
                send.to_string().as_bytes(),
                b"\xFF",
                br#"{"type":"ping"}"#,
                b"\xFF",
                json!({"type": "subscribe", "subscriptions": sub_ref})
                    .to_string()
                    .as_bytes(),
            ]
            .concat(),
        ),
        (
            "ws_session",
            "own_subscribe",
            with(0, subscribe.to_string().as_bytes()),
        ),
        (
            "ws_session",
            "not_subscribed",
            with(0, br#"{"type":"ping"}"#),
        ),
    ]
}

/// Writes the seeds into `fuzz/corpus/<target>/<name>` (run by hand; see the module doc).
#[test]
#[ignore = "rewrites the checked-in seed corpus"]
fn write_seed_corpus() {
    for (target, name, data) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(name), data).expect("seed written");
    }
}

/// Runs every checked-in input of `target`; there must be some.
fn run_corpus(target: &str) {
    let dir = corpus_dir(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| fuzzing::check(target, &data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        count += 1;
    }
    assert!(count > 0, "{target}: no corpus in {}", dir.display());
}

#[test]
fn checked_in_corpus_holds_every_property() {
    for target in TARGETS {
        run_corpus(target);
    }
}

#[test]
fn checked_in_corpus_has_every_seed() {
    for (target, name, data) in seeds() {
        let path = corpus_dir(target).join(name);
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            stored,
            data,
            "{} is stale: rewrite the seeds",
            path.display()
        );
    }
}

fn run(cases: u32, strategy: impl Strategy<Value = Vec<u8>>, check: fn(&[u8])) {
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |data| {
            check(&data);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Variations on a valid text: a byte replaced, inserted or removed, or a slice of it.
fn mutations(base: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(base),
        any::<usize>(),
        any::<u8>(),
        0u8..4,
    )
        .prop_map(|(mut b, at, byte, how)| {
            let at = if b.is_empty() { 0 } else { at % b.len() };
            match how {
                0 if !b.is_empty() => b[at] = byte,
                1 => b.insert(at, byte),
                2 if !b.is_empty() => {
                    b.remove(at);
                }
                _ => b.truncate(at),
            }
            b
        })
}

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, d)| d)
        .collect()
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

#[test]
fn parsers_on_generated_input() {
    run(1_000, bytes(200), fuzzing::check_parsers);
    run(
        1_000,
        mutations(seeds_of("parsers")),
        fuzzing::check_parsers,
    );
    // Shaped like the real thing: cursors and tokens with odd numbers, channel fields.
    let cursor = "[a-z0-9_-]{0,6}:[-+0-9]{0,22}".prop_map(|s| [&[1u8][..], s.as_bytes()].concat());
    run(1_000, cursor, fuzzing::check_parsers);
    let channel = (
        any::<i64>(),
        "[a-z_0-9]{0,12}",
        "\\PC{0,12}",
        any::<i64>(),
        ".{0,20}",
    )
        .prop_map(|(c, comp, area, i, d)| {
            json!({"contextid": c, "component": comp, "area": area, "itemid": i, "details": d})
                .to_string()
                .into_bytes()
        })
        .prop_map(|j| [&[4u8][..], &j].concat());
    run(500, channel, fuzzing::check_parsers);
}

#[test]
fn ws_frames_on_generated_input() {
    run(500, bytes(200), fuzzing::check_ws_frame);
    run(
        1_000,
        mutations(seeds_of("ws_frame")),
        fuzzing::check_ws_frame,
    );
}

#[test]
fn sse_queries_on_generated_input() {
    run(500, bytes(200), fuzzing::check_sse_query);
    run(
        1_000,
        mutations(seeds_of("sse_query")),
        fuzzing::check_sse_query,
    );
    let pairs = proptest::collection::vec(
        (
            proptest::sample::select(vec!["usertoken", "channel", "token", "cursor", "x"]),
            "[a-z0-9%:.&=+]{0,8}",
        ),
        0..6,
    )
    .prop_map(|p| {
        p.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    });
    run(500, pairs, fuzzing::check_sse_query);
}

#[test]
fn http_bodies_on_generated_input() {
    let raw = (any::<u8>(), bytes(200)).prop_map(|(b, rest)| [&[b][..], &rest].concat());
    run(300, raw, fuzzing::check_http);
    run(1_000, mutations(seeds_of("http")), fuzzing::check_http);
}

#[test]
fn ws_sessions_on_generated_input() {
    run(
        100,
        mutations(seeds_of("ws_session")),
        fuzzing::check_ws_session,
    );
    let frames = proptest::collection::vec(
        mutations(seeds_of("ws_frame")).prop_filter("no separator", |f| !f.contains(&0xFF)),
        0..4,
    )
    .prop_map(|fs| {
        let mut out = vec![1u8];
        for f in fs {
            out.extend_from_slice(&f);
            out.push(0xFF);
        }
        out
    });
    run(100, frames, fuzzing::check_ws_session);
}

/// The canonical-form property, on the spellings that once slipped through: a cursor or a token
/// whose number has a leading zero or a plus sign must be refused, not read as the same number.
#[test]
fn non_canonical_numbers_are_refused() {
    for cursor in ["ab:042", "ab:+42", "ab:-0", "ab:00"] {
        fuzzing::check_cursor(cursor);
    }
    let token = fuzzing::user_token();
    for spelling in [
        token.replacen("v1.42.", "v1.042.", 1),
        token.replacen("v1.42.", "v1.+42.", 1),
        token.replacen(".4102444800.", ".04102444800.", 1),
        token.replacen(".4102444800.", ".+4102444800.", 1),
    ] {
        fuzzing::check_token(&spelling);
    }
}
