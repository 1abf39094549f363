//! hound-stress: houndpool's load, chaos and benchmark harness.
fn main() {}
