//! libFuzzer entry point for the virtio-blk target (see `devices_fuzz::fuzz_block`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| devices_fuzz::fuzz_block(data));
