//! Fuzz target `sse_query`: see `realtime::fuzzing::check_sse_query` for the input layout and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| realtime::fuzzing::check_sse_query(data));
