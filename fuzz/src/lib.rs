//! Tidemark's fuzz targets: the properties live in `props.rs`, shared with the corpus replay
//! in `tests/it/fuzz_corpus.rs`; `fuzz_targets/*.rs` only hand libFuzzer's bytes to them.

pub mod props;
