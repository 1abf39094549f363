//! Allocator settings for long-running processes that buffer large, short-lived byte strings
//! (the daemon's client buffers): give freed memory back to the kernel.
//!
//! glibc raises its mmap threshold to the size of the largest mmap-ed block freed so far (up
//! to 32 MiB), after which buffers of that size come from the heap and their pages stay
//! resident after they are freed. [`tune`] fixes the threshold at 128 KiB, so that every large
//! buffer is mmap-ed and unmapped when freed; [`trim`] returns the free pages of the heaps.
//! Other C libraries need neither; both are then no-ops.
#![allow(unsafe_code)]

/// Fixes glibc's mmap threshold at 128 KiB and its trim threshold at 1 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    // SAFETY: mallopt only changes allocator parameters; it is called with constant, valid
    // arguments and touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// No-op outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Returns the free pages of every glibc heap to the kernel (`malloc_trim(0)`); costs a walk
/// of the free lists, so call it after large buffers were freed, not on a hot path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds free; no pointer of ours
    // is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// No-op outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
