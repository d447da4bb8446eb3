//! Benchmarks live in `bench_main.rs` (run with `cargo bench -p starling-benches`);
//! this library is empty so the package has a target to build in `cargo test`.
