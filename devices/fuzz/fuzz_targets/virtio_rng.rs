//! libFuzzer entry point for the virtio-rng target (see `devices_fuzz::fuzz_rng`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| devices_fuzz::fuzz_rng(data));
