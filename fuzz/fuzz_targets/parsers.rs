//! Fuzz target `parsers`: see `realtime::fuzzing::check_parsers` for the input layout and the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| realtime::fuzzing::check_parsers(data));
