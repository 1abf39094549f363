//! The hound's self-confinement. Implemented with the sandbox issue.
