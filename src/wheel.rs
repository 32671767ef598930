//! Hierarchical timer wheel over integer millisecond ticks (to be written).
