//! The examples run for real where that is cheap: `counting_engine` starts a node on its
//! wrapper engine, notifies and exits by itself. (The others serve until a signal; CI builds
//! them.)

#[allow(dead_code)]
#[path = "../examples/counting_engine.rs"]
mod counting_engine;

#[tokio::test]
async fn the_counting_engine_example_counts_what_the_node_appends() {
    let appended = counting_engine::run().await.expect("the example runs");
    assert_eq!(appended, 3);
}
