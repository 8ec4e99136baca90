//! Fuzz target `http`: see `realtime::fuzzing::check_http` for the input layout and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| realtime::fuzzing::check_http(data));
