//! Fuzz target `config`: the property is `tidemark_fuzz::props::config` (fuzz/src/props.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_fuzz::props::config(data));
