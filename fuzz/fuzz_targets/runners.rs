//! Fuzz target `runners`: the property is `tidemark_fuzz::props::runners` (fuzz/src/props.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_fuzz::props::runners(data));
