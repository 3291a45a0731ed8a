//! Fuzz target `stacks`: the property is `tidemark_fuzz::props::stacks` (fuzz/src/props.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tidemark_fuzz::props::stacks(data));
