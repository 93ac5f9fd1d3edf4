#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hark::fuzzing::run("github_delivery", data));
