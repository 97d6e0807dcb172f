//! Tasks of the workspace itself, beside the crates: for now the tidy checks, which run as
//! ordinary tests (`cargo test -p xtask`) and keep the layout as ARCHITECTURE.md draws it —
//! the layers of the crates, a `//!` at the top of every file, a doc line on every public
//! item, and documents that name only files that exist.

#[cfg(test)]
mod tidy;
