//! Log group names and retention values, as CloudWatch Logs accepts them.

/// The retention periods CloudWatch Logs accepts (`PutRetentionPolicy`), in days.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Check a retention value.
pub fn validate_retention(days: u32) -> Result<(), String> {
    if RETENTION_DAYS.contains(&days) {
        Ok(())
    } else {
        Err(format!(
            "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: {RETENTION_DAYS:?}"
        ))
    }
}

/// Check a log group name: 1–512 characters of `[.-_/#A-Za-z0-9]`.
pub fn validate_group_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#'));
    if name.is_empty() || name.len() > 512 || !ok_chars {
        return Err(format!(
            "1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+ and have length between 1 and 512"
        ));
    }
    Ok(())
}

/// A group's folder name: every character but `[A-Za-z0-9_-]` percent-encoded, so no name
/// can climb out of the store (`..`) or collide.
pub fn dir_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// A file-name prefix for an hour (`2025-03-11T00`).
pub fn hour_name(hour_ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(hour_ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour()
        ),
        Err(_) => format!("h{hour_ms}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_retention() {
        assert!(validate_group_name("/aws/bedrock/modelinvocations").is_ok());
        assert!(validate_group_name("a#b.c_d-e").is_ok());
        assert!(validate_group_name("").is_err());
        assert!(validate_group_name("has space").is_err());
        assert!(validate_group_name(&"x".repeat(513)).is_err());
        assert!(validate_group_name(&"x".repeat(512)).is_ok());
        // Folder names keep the safe characters and encode the rest, so none climbs
        // out or collides (and existing folders keep their names).
        assert_eq!(dir_name("a-b_c/d.e#"), "a-b_c%2Fd%2Ee%23");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert!(validate_retention(30).is_ok());
        assert!(validate_retention(3653).is_ok());
        assert!(validate_retention(2).is_err());
        assert_eq!(dir_name("/aws/x"), "%2Faws%2Fx");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert_eq!(
            hour_name(1_741_653_482_000 / 3_600_000 * 3_600_000),
            "2025-03-11T00"
        );
    }
}
