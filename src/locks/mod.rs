//! The lock table (to be written).
