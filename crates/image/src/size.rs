//! Sizes as qemu-img parses and prints them.

use crate::error::{Error, Result};

/// Parses "1G", "512", "1.5M", "64k", "2T" (binary units, as qemu_strtosz). A bare number is bytes.
pub fn parse(s: &str) -> Result<u64> {
    let bad = || Error::Invalid(format!("Invalid size specified: '{s}'"));
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suf) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let mult: u64 = match suf {
        "" | "b" | "B" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        "t" | "T" => 1 << 40,
        "p" | "P" => 1 << 50,
        "e" | "E" => 1 << 60,
        _ => return Err(bad()),
    };
    if let Some((i, f)) = num.split_once('.') {
        if f.contains('.') || mult == 1 {
            return Err(bad());
        }
        let i: u64 = if i.is_empty() {
            0
        } else {
            i.parse().map_err(|_| bad())?
        };
        let frac: f64 = format!("0.{f}").parse().map_err(|_| bad())?;
        let v = i.checked_mul(mult).ok_or_else(bad)?;
        return v.checked_add((frac * mult as f64) as u64).ok_or_else(bad);
    }
    let v: u64 = num.parse().map_err(|_| bad())?;
    v.checked_mul(mult).ok_or_else(bad)
}

/// C's "%0.3g".
fn g3(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let e = x.abs().log10().floor() as i32;
    let dec = (2 - e).max(0) as usize;
    let s = format!("{x:.dec$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// QEMU's size_to_str: "1 GiB", "152 KiB", "1.5 MiB", "0 B".
pub fn human(v: u64) -> String {
    const SUF: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let x = v as f64 / (1000.0 / 1024.0);
    // frexp exponent: x = m * 2^i with m in [0.5, 1)
    let i = if x == 0.0 {
        0
    } else {
        x.log2().floor() as i32 + 1
    };
    let i = ((i - 1) / 10).clamp(0, 6) as usize;
    let div = (1u64 << (i * 10)) as f64;
    format!("{} {}B", g3(v as f64 / div), SUF[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn human_matches_qemu() {
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(156160), "152 KiB");
        assert_eq!(human(159744), "156 KiB");
        assert_eq!(human(0), "0 B");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(105185280), "100 MiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
        assert_eq!(human(1000), "0.977 KiB");
    }
    #[test]
    fn parse_sizes() {
        assert_eq!(parse("1G").unwrap(), 1 << 30);
        assert_eq!(parse("64k").unwrap(), 65536);
        assert_eq!(parse("1.5M").unwrap(), 1536 << 10);
        assert_eq!(parse("512").unwrap(), 512);
        assert!(parse("x").is_err());
        assert!(parse("99999999999E").is_err());
    }
}
