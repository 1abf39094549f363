//! houndd: the houndpool daemon and demo.
fn main() {}
