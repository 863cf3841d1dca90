//! libFuzzer entry point for the virtio-vsock target (see `devices_fuzz::fuzz_vsock`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| devices_fuzz::fuzz_vsock(data));
