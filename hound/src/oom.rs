//! Classifiable out-of-memory exits.
//!
//! A hound runs under an address-space rlimit (its memory budget). When an infallible
//! allocation fails against it, std calls `handle_alloc_error`, which aborts: SIGABRT, which
//! the supervisor could not tell from any other abort. This module makes it classifiable:
//!
//! - [`OomAwareAllocator`] wraps the system allocator and records that an allocation returned
//!   null (one relaxed atomic store on the failure path only; the success path is untouched);
//! - [`install`] sets a SIGABRT handler that, when such a failure was recorded, ends the
//!   process at once with `_exit(EXIT_OUT_OF_MEMORY)`. Any other abort keeps its default
//!   behaviour.
//!
//! Fallible allocation (`try_reserve`) keeps working: the wrapper returns null as usual. A
//! caveat: after a handled `try_reserve` failure, a later *unrelated* abort is also reported
//! as out of memory (the flag is never cleared, to keep the allocation path free of stores).
//!
//! Only the `hound` binary registers the allocator (`#[global_allocator]` in its `main.rs`);
//! the library does not, so an embedding application keeps its own allocator. Multi-call
//! executables (`run_hound_if_requested`) therefore report an RLIMIT_AS overrun as SIGABRT,
//! while a cgroup OOM kill is classified either way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a hound whose allocation failed against its memory budget.
pub const EXIT_OUT_OF_MEMORY: i32 = 6;

/// Set when an allocation returned null.
static ALLOCATION_FAILED: AtomicBool = AtomicBool::new(false);

/// The system allocator, recording allocation failures for [`install`]'s handler.
///
/// Guarantee: behaves exactly like [`System`] (same pointers, same nulls).
#[derive(Debug, Default, Clone, Copy)]
pub struct OomAwareAllocator;

#[inline]
fn note(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        ALLOCATION_FAILED.store(true, Ordering::Relaxed);
    }
    p
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the only addition is an atomic
// store when `System` returned null.
unsafe impl GlobalAlloc for OomAwareAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        note(unsafe { System.alloc(layout) })
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        note(unsafe { System.alloc_zeroed(layout) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        note(unsafe { System.realloc(ptr, layout, new_size) })
    }
}

extern "C" fn on_abort(_: libc::c_int) {
    if ALLOCATION_FAILED.load(Ordering::Relaxed) {
        // SAFETY: `_exit` is async-signal-safe and ends the process without running anything.
        unsafe { libc::_exit(EXIT_OUT_OF_MEMORY) };
    }
    // Otherwise return: abort() then restores the default action and raises SIGABRT again.
}

/// Installs the SIGABRT handler. Call it first in `main`, before the sandbox (which may forbid
/// `rt_sigaction` for other signals later). Without [`OomAwareAllocator`] registered as the
/// global allocator it never fires. Returns false if the handler could not be installed.
pub fn install() -> bool {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
    // performs an atomic load and `_exit`, both async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGABRT, &sa, std::ptr::null_mut()) == 0
    }
}

/// Whether an allocation has failed in this process.
pub fn allocation_failed() -> bool {
    ALLOCATION_FAILED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_is_transparent_and_records_nulls() {
        let a = OomAwareAllocator;
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: non-zero-size layout; the pointer is freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            a.dealloc(p, layout);
        }
        assert!(!allocation_failed());
        assert!(note(std::ptr::null_mut()).is_null());
        assert!(allocation_failed());
    }
}
