//! The `hound` binary: see the crate docs of `houndpool_hound`.

/// Allocation failures against the memory budget end the hound with `EXIT_OUT_OF_MEMORY`.
#[global_allocator]
static ALLOCATOR: houndpool_hound::oom::OomAwareAllocator = houndpool_hound::oom::OomAwareAllocator;

fn main() {
    houndpool_hound::oom::install();
    std::process::exit(houndpool_hound::main_from_env());
}
