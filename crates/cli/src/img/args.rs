//! Argument helpers shared by rebase, commit, measure, dd and bench: qemu-img's number parsing
//! (cvtnum) with its messages, cache and aio mode names, long options as aliases of short ones.

use super::{Fail, R};
use crate::getopt::{Opt, Parsed};
use virtkit_image::qnum::{strtosz, strtou64, NumError};

/// qemu-img's cvtnum_full: a size (with suffixes) or a plain number within `[min, max]`.
pub fn cvtnum_full(name: &str, value: &str, is_size: bool, min: u64, max: u64) -> R<u64> {
    let r = if is_size {
        strtosz(value)
    } else {
        strtou64(value)
    };
    match r {
        Err(NumError::Invalid) => Err(Fail::new(format!("Invalid {name} specified: '{value}'."))),
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Fail::new(format!(
            "Invalid {name} specified. Must be between {min} and {max}."
        ))),
    }
}

/// qemu-img's cvtnum: 0 to INT64_MAX.
pub fn cvtnum(name: &str, value: &str, is_size: bool) -> R<u64> {
    cvtnum_full(name, value, is_size, 0, i64::MAX as u64)
}

pub const INT_MAX: u64 = i32::MAX as u64;

/// Cache modes bdrv_parse_cache_mode accepts; `Some(direct, writethrough)`.
pub fn cache_mode(s: &str) -> Option<(bool, bool)> {
    Some(match s {
        "off" | "none" => (true, false),
        "directsync" => (true, true),
        "writeback" | "unsafe" => (false, false),
        "writethrough" => (false, true),
        _ => return None,
    })
}

/// qemu-img's check of one `-o` argument (is_valid_option_list).
pub fn option_list_ok(list: &str) -> bool {
    if list.is_empty() || list.starts_with(',') {
        return false;
    }
    let trailing = list.len() - list.trim_end_matches(',').len();
    trailing.is_multiple_of(2)
}

/// Long options given as aliases of short ones (`--backing X` is `-b X`).
pub fn alias_longs(mut p: Parsed, map: &[(&str, char)]) -> Parsed {
    for o in &mut p.opts {
        if let Opt::Long(n, v) = o {
            if let Some((_, c)) = map.iter().find(|(m, _)| m == n) {
                *o = Opt::Short(*c, v.take());
            }
        }
    }
    p
}

/// The open error qemu-img prints for `-f` naming a format it does not know.
pub fn unknown_driver(file: &str, fmt: &str) -> Fail {
    Fail::new(format!(
        "Could not open '{}': Unknown driver '{}'",
        super::show(file),
        super::show(fmt)
    ))
}

/// `-f` as qemu-img's open takes it: None probes, an unknown name fails at open time.
pub fn format_for_open(file: &str, fmt: Option<&str>) -> R<Option<virtkit_image::Format>> {
    match fmt {
        None => Ok(None),
        Some(f) => virtkit_image::Format::from_name(f)
            .map(Some)
            .ok_or_else(|| unknown_driver(file, f)),
    }
}

/// Prints to stdout; a closed pipe is not an error (qemu-img ignores SIGPIPE and carries on,
/// where `println!` would panic).
pub fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}
