//! Numbers as QEMU parses them (util/cutils.c): `qemu_strtosz` for sizes ("64k", "1.5G",
//! "0x200") and `qemu_strtou64` for plain numbers (strtoull with base 0: "010" is octal, "-1"
//! wraps). qemu-img's messages depend on which of the two failed and how, so the failure kind
//! is kept.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumError {
    /// Not a number (EINVAL).
    Invalid,
    /// Out of range, or negative where a size was expected (ERANGE).
    Range,
}

/// What C's strtoull consumes from `s` in `base` (0, 10 or 16): (value, bytes consumed,
/// overflowed). Consumed is 0 when no digits were found.
fn strtoull(s: &[u8], base: u32) -> (u64, usize, bool) {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let mut base = base;
    let hex_prefix = i + 1 < s.len()
        && s[i] == b'0'
        && (s[i + 1] == b'x' || s[i + 1] == b'X')
        && s.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit());
    if (base == 0 || base == 16) && hex_prefix {
        base = 16;
        i += 2;
    } else if base == 0 {
        base = if s.get(i) == Some(&b'0') { 8 } else { 10 };
    }
    let start = i;
    let mut v: u64 = 0;
    let mut over = false;
    while i < s.len() {
        let d = match (s[i] as char).to_digit(base) {
            Some(d) => d as u64,
            None => break,
        };
        match v.checked_mul(base as u64).and_then(|x| x.checked_add(d)) {
            Some(x) => v = x,
            None => over = true,
        }
        i += 1;
    }
    if i == start {
        return (0, 0, false);
    }
    if over {
        return (u64::MAX, i, true);
    }
    (if neg { v.wrapping_neg() } else { v }, i, false)
}

/// qemu_strtou64(s, NULL, 0, ...): the whole string must be one number.
pub fn strtou64(s: &str) -> Result<u64, NumError> {
    let (v, n, over) = strtoull(s.as_bytes(), 0);
    if n == 0 {
        return Err(NumError::Invalid);
    }
    if n != s.len() {
        return Err(NumError::Invalid);
    }
    if over {
        return Err(NumError::Range);
    }
    Ok(v)
}

fn suffix_mul(c: Option<u8>) -> Option<u64> {
    Some(match c?.to_ascii_uppercase() {
        b'B' => 1,
        b'K' => 1 << 10,
        b'M' => 1 << 20,
        b'G' => 1 << 30,
        b'T' => 1 << 40,
        b'P' => 1 << 50,
        b'E' => 1 << 60,
        _ => return None,
    })
}

/// The fraction strtod reads at the start of `s` (exponent letters already cut off):
/// (value, bytes consumed), or None when strtod would convert nothing.
fn strtod_fraction(s: &[u8]) -> Option<(f64, usize)> {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let num_start = i;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let mut digits = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    let text = std::str::from_utf8(&s[num_start..i]).ok()?;
    let text = text.strip_suffix('.').unwrap_or(text);
    Some((text.parse::<f64>().ok()?, i))
}

/// qemu_strtosz(s, NULL, ...): a size in bytes with an optional binary suffix.
pub fn strtosz(s: &str) -> Result<u64, NumError> {
    let b = s.as_bytes();
    let (mut val, mut end, over) = strtoull(b, 10);
    // parse_uint refuses negative numbers (after it converted them).
    let trimmed = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let finish = |end: usize, r: Result<u64, NumError>| -> Result<u64, NumError> {
        // With no end pointer, anything left over makes the string invalid.
        if end < b.len() {
            return Err(NumError::Invalid);
        }
        r
    };
    if over {
        return finish(end, Err(NumError::Range));
    }
    if end > 0 && trimmed.starts_with('-') {
        return finish(end, Err(NumError::Range));
    }
    let mut valf: u64 = 0;
    let at = |i: usize| b.get(i).copied();
    if end > 0 && val == 0 && matches!(at(end), Some(b'x' | b'X')) {
        let (v, e, over) = strtoull(b, 16);
        if e == 0 {
            return Err(NumError::Invalid);
        }
        if over {
            return finish(e, Err(NumError::Range));
        }
        if at(e) == Some(b'.') || suffix_mul(at(e)).is_some_and(|m| m > 0) {
            return Err(NumError::Invalid);
        }
        val = v;
        end = e;
    } else if at(end) == Some(b'.') || (end == 0 && s.contains('.')) {
        if end > 0 && at(end) == Some(b'.') && !at(end + 1).is_some_and(|c| c.is_ascii_digit()) {
            end += 1;
        } else {
            let tail = &b[end..];
            let cut = tail
                .iter()
                .position(|&c| c == b'e' || c == b'E')
                .unwrap_or(tail.len());
            let Some((fraction, used)) = strtod_fraction(&tail[..cut]) else {
                return Err(NumError::Invalid);
            };
            end += used;
            if fraction.is_sign_negative() {
                return finish(end, Err(NumError::Range));
            }
            if fraction == 1.0 {
                val = val.checked_add(1).ok_or(NumError::Range)?;
            } else {
                valf = (fraction * 18446744073709551616.0) as u64;
                if valf == 0 && fraction > 0.0 {
                    valf = 1;
                }
            }
        }
    } else if end == 0 {
        return Err(NumError::Invalid);
    }
    let mul = match suffix_mul(at(end)) {
        Some(m) => {
            end += 1;
            m
        }
        None => 1,
    };
    if mul == 1 {
        if valf != 0 {
            return Err(NumError::Invalid);
        }
        return finish(end, Ok(val));
    }
    // 64.64 fixed point times the multiplier, rounding half up.
    let whole = (val as u128) * (mul as u128);
    let frac = (valf as u128) * (mul as u128);
    let total = whole + (frac >> 64) + ((frac >> 63) & 1);
    if total > u64::MAX as u128 {
        return finish(end, Err(NumError::Range));
    }
    finish(end, Ok(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes() {
        assert_eq!(strtosz("512"), Ok(512));
        assert_eq!(strtosz("64k"), Ok(65536));
        assert_eq!(strtosz("64K"), Ok(65536));
        assert_eq!(strtosz("1.5k"), Ok(1536));
        assert_eq!(strtosz("1.k"), Ok(1024));
        assert_eq!(strtosz(".5k"), Ok(512));
        assert_eq!(strtosz("0x200"), Ok(512));
        assert_eq!(strtosz("1b"), Ok(1));
        assert_eq!(strtosz("1e"), Ok(1 << 60));
        assert_eq!(strtosz("16e"), Err(NumError::Range));
        assert_eq!(strtosz("1.5"), Err(NumError::Invalid));
        assert_eq!(strtosz("x"), Err(NumError::Invalid));
        assert_eq!(strtosz(""), Err(NumError::Invalid));
        assert_eq!(strtosz("-1"), Err(NumError::Range));
        assert_eq!(strtosz("-1k"), Err(NumError::Invalid));
        assert_eq!(strtosz("1X"), Err(NumError::Invalid));
        assert_eq!(strtosz("0x1k"), Err(NumError::Invalid));
        assert_eq!(strtosz("18446744073709551616"), Err(NumError::Range));
    }
    #[test]
    fn numbers() {
        assert_eq!(strtou64("10"), Ok(10));
        assert_eq!(strtou64("010"), Ok(8));
        assert_eq!(strtou64("0x10"), Ok(16));
        assert_eq!(strtou64("+1"), Ok(1));
        assert_eq!(strtou64("-1"), Ok(u64::MAX));
        assert_eq!(strtou64("1k"), Err(NumError::Invalid));
        assert_eq!(strtou64(""), Err(NumError::Invalid));
        assert_eq!(strtou64("0x"), Err(NumError::Invalid));
        assert_eq!(strtou64("99999999999999999999"), Err(NumError::Range));
    }
}
