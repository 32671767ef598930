//! Command-line client subcommands (to be written).
