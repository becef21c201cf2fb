//! `adiuva`: the Adiuva app's binary; everything it does is the library's (`lib.rs`).

use std::process::ExitCode;

/// Automerge, the read views and serde allocate many small objects: with mimalloc, opening a
/// workspace and listing it measured 10–25% faster than with glibc's allocator (`BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    adiuva::main()
}
