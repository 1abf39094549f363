#![no_main]
// Implemented with the foundation issue.
libfuzzer_sys::fuzz_target!(|data: &[u8]| { let _ = data; });
