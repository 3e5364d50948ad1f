use std::process::ExitCode;

/// The proxies allocate a little per request on every thread; mimalloc's thread-local
/// free lists make that markedly cheaper than the system allocator (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    switchboard::cli::main()
}
