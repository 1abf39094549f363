//! The `hound` binary: see the crate docs of `houndpool_hound`.
fn main() {
    std::process::exit(houndpool_hound::main_from_env());
}
