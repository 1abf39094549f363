//! houndpool: run untrusted, heavy evidence work in a pool of sandboxed child processes.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
