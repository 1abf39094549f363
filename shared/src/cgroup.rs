//! cgroup detection (v1 and v2), pool sizing from container limits, and per-hound cgroups.
//! Implemented with the sandbox / sizing issue.
