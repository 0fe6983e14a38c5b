//! Shared helpers of the benchmark binaries.

/// About 1 KB of text.
pub fn kilobyte_text(tag: &str) -> String {
    let mut s = format!("{tag}: ");
    while s.len() < 1024 {
        s.push_str("the quick brown fox jumps over the lazy dog ");
    }
    s.truncate(1024);
    s
}
