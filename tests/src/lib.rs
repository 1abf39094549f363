//! Helpers for houndpool's end-to-end tests.
