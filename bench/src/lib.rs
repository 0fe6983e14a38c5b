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

/// Every Bedrock invocation-log object (`.../BedrockModelInvocationLogs/...json.gz`) under
/// `dir`, appended to `out` (e.g. from `gen-records`).
pub fn log_objects(
    dir: &std::path::Path,
    out: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            log_objects(&p, out)?;
        } else if p.to_string_lossy().ends_with(".json.gz")
            && p.to_string_lossy().contains("/BedrockModelInvocationLogs/")
        {
            out.push(p);
        }
    }
    Ok(())
}
