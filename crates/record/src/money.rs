//! Money as an exact integer count of 10^-12 USD: the scale of every cost (prices have
//! at most 6 decimals per 1M tokens) and of SQL's `DECIMAL(38, 12)` cost column. One
//! parser and one printer for the store, the reports and the budgets.

/// 10^-12 USD per USD.
pub const PICO: i128 = 1_000_000_000_000;

/// Decimals of a [`PICO`] amount.
pub const SCALE: usize = 12;

/// A plain non-negative decimal (`"0.00000936"`, `"12"`) in units of 10^-12, or `None`
/// when it is not one, has more than 12 decimals, or passes 38 digits.
pub fn parse(s: &str) -> Option<i128> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > SCALE {
        return None;
    }
    let mut f: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..SCALE {
        f *= 10;
    }
    let v = int
        .parse::<i128>()
        .ok()?
        .checked_mul(PICO)?
        .checked_add(f)?;
    (v < 10i128.pow(38)).then_some(v)
}

/// An amount in units of 10^-12 as a plain decimal, trailing zeros dropped (`"0"`,
/// `"1.5"`, `"0.000000000001"`).
pub fn format(v: i128) -> String {
    let a = v.unsigned_abs();
    let (whole, frac) = (a / PICO as u128, a % PICO as u128);
    let mut s = format!("{}{whole}", if v < 0 { "-" } else { "" });
    if frac != 0 {
        s.push('.');
        s.push_str(format!("{frac:012}").trim_end_matches('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_and_refuses_the_rest() {
        assert_eq!(parse("0.00000936"), Some(9_360_000));
        assert_eq!(parse("12"), Some(12 * PICO));
        assert_eq!(parse("12.5"), Some(12 * PICO + PICO / 2));
        assert_eq!(parse("0.000000000001"), Some(1));
        for bad in [
            "0.0000000000001",
            "-1",
            "1e-3",
            "",
            ".5",
            "abc",
            "99999999999999999999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(format(0), "0");
        assert_eq!(format(9_360_000), "0.00000936");
        assert_eq!(format(PICO * 3 / 2), "1.5");
        assert_eq!(format(-1), "-0.000000000001");
        for s in ["0.3", "1071.823475494", "7"] {
            assert_eq!(format(parse(s).unwrap_or(0)), s);
        }
    }
}
