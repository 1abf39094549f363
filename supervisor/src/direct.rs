//! The buffer a caller's `Pool::recv_outcomes` lends to its own pass over the completion
//! rings: outcomes that pass concludes go straight into the caller's `Vec` instead of through
//! the outcome channel (two moves of a ~200-byte `Outcome` and the channel's atomics per job).
//!
//! One slot per thread. A pool is named by an opaque [`Owner`] (its books' address, compared
//! and never dereferenced), so an outcome of another pool concluded on this thread (a tracked
//! job's waker that polls another pool inline) never lands in this pool's buffer. This module
//! knows nothing of the books themselves, so the books can deliver here without importing
//! the batch API that lends.

use std::cell::RefCell;

use crate::job::Outcome;

/// Which pool a lent buffer belongs to: the address of its books, compared only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner(usize);

/// The [`Owner`] naming the pool whose books are `books`.
pub(crate) fn owner_of<T>(books: &T) -> Owner {
    Owner(std::ptr::from_ref(books) as usize)
}

/// A caller's `recv_outcomes` buffer, lent for one pass over the rings.
struct Lent {
    owner: Owner,
    /// How many outcomes `buf` may hold in all (the caller's `max` plus what it held before).
    limit: usize,
    buf: Vec<Outcome>,
}

thread_local! {
    /// The buffer lent for the pass this thread is running, if any.
    static LENT: RefCell<Option<Lent>> = const { RefCell::new(None) };
}

/// Gives the lent buffer back to the caller when the pass ends (or unwinds).
pub(crate) struct GiveBack<'a>(&'a mut Vec<Outcome>);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        LENT.with(|d| {
            if let Ok(mut d) = d.try_borrow_mut() {
                if let Some(lent) = d.take() {
                    *self.0 = lent.buf;
                }
            }
        });
    }
}

/// Lends `buf` (up to `limit` outcomes in all) to this thread's pass for `owner`'s pool, until
/// the returned guard drops. `None` when a pass of this thread is already lending its buffer
/// (a tracked job's waker that consumes inline): outcomes then go to that buffer or the
/// channel, and `buf` stays with the caller.
pub(crate) fn lend<'a>(
    owner: Owner,
    buf: &'a mut Vec<Outcome>,
    limit: usize,
) -> Option<GiveBack<'a>> {
    let lent = LENT.with(|d| match d.try_borrow_mut() {
        Ok(mut d) if d.is_none() => {
            *d = Some(Lent {
                owner,
                limit,
                buf: std::mem::take(buf),
            });
            true
        }
        _ => false,
    });
    lent.then(|| GiveBack(buf))
}

/// Delivers `outcome` of `owner`'s pool into the buffer this thread lent for its
/// `recv_outcomes` pass, if there is one for this pool with room: `None`. Otherwise gives it
/// back (the caller sends it to the channel).
#[inline]
pub(crate) fn deliver(owner: Owner, outcome: Outcome) -> Option<Outcome> {
    LENT.with(|d| {
        let Ok(mut d) = d.try_borrow_mut() else {
            return Some(outcome);
        };
        match d.as_mut() {
            Some(lent) if lent.owner == owner && lent.buf.len() < lent.limit => {
                lent.buf.push(outcome);
                None
            }
            _ => Some(outcome),
        }
    })
}
