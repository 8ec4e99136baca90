//! Fuzz target `ws_frame`: see `realtime::fuzzing::check_ws_frame` for the input layout and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| realtime::fuzzing::check_ws_frame(data));
