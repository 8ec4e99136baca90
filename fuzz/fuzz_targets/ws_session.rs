//! Fuzz target `ws_session`: see `realtime::fuzzing::check_ws_session` for the input layout and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| realtime::fuzzing::check_ws_session(data));
