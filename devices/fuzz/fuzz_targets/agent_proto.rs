//! libFuzzer entry point for the agent protocol's host side (see `devices_fuzz::fuzz_agent_proto`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| devices_fuzz::fuzz_agent_proto(data));
