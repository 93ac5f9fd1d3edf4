#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hark::fuzzing::standard_webhook(data));
