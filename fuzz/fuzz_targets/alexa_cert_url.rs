#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hark::fuzzing::alexa_cert_url(data));
