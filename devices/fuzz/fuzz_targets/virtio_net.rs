//! libFuzzer entry point for the virtio-net target (see `devices_fuzz::fuzz_net`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| devices_fuzz::fuzz_net(data));
