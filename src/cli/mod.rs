//! Command-line subcommands that are more than a call into the library.

pub mod transcode;
