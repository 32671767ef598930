//! The blocking client (to be written).
