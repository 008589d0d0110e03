//! The consistency check, in QEMU's order and words (block/parallels.c parallels_co_check):
//! unclean close, data offset, BAT entries outside the image, space leaked at the end,
//! duplicated offsets, statistics.
//!
//! Where QEMU would abort (an entry below the data area reaches an assertion) such entries
//! are reported as outside the image; extension clusters count as data, so that a repair does
//! not truncate them away.

use super::{header, Meta, Parallels};
use crate::driver::{CheckReport, Repair};
use crate::error::Result;
use crate::fileio;

/// Per-problem messages kept (the counters go on): a hostile BAT can name 2^29 entries.
const MAX_MESSAGES: usize = 1000;

fn say(r: &mut CheckReport, m: String) {
    if r.messages.len() < MAX_MESSAGES {
        r.messages.push(m);
    }
}

pub fn check(img: &Parallels, repair: Repair) -> Result<CheckReport> {
    if repair != Repair::None {
        crate::driver::check_writable(img.read_only)?;
    }
    let fix_errors = repair == Repair::All;
    let fix_leaks = repair != Repair::None;
    let w = if fix_errors { "Repairing" } else { "ERROR" };
    let g = img.geometry();
    let f = &img.file;
    let mut r = CheckReport::default();
    let mut m = img.lock();

    if m.unclean {
        say(&mut r, format!("{w} image was not closed correctly"));
        r.corruptions += 1;
        if fix_errors {
            r.corruptions_fixed += 1;
            m.unclean = false;
        }
    }

    // QEMU sees the file in whole sectors.
    let len = fileio::file_len(f)?.div_ceil(512) * 512;
    let (ok, correct) = m.hdr.test_data_off(len.div_ceil(512));
    if !ok {
        r.corruptions += 1;
        if fix_errors {
            m.hdr.data_off = correct as u32;
            fileio::write_full(f, &(correct as u32).to_le_bytes(), header::OFF_DATA_OFF)?;
            m.data_start = correct;
            img.refresh(&mut m)?;
            r.corruptions_fixed += 1;
        }
        say(&mut r, format!("{w} data_off field has incorrect value"));
    }

    // Entries outside the image.
    let ds = m.data_start * 512;
    let mut high = 0u64;
    for i in 0..m.bat.len() as u64 {
        let off = m.host(&g, i);
        if off.saturating_add(g.cs) > len || (off != 0 && off < ds) {
            say(&mut r, format!("{w} cluster {i} is outside image"));
            r.corruptions += 1;
            if fix_errors {
                img.set_bat(&mut m, i, &[0])?;
                r.corruptions_fixed += 1;
            }
            continue;
        }
        high = high.max(off);
    }
    // Entries past the end of a short file are 0: outside only when a cluster exceeds it.
    let tail = g.bat_size - m.bat.len() as u64;
    if tail > 0 && g.cs > len {
        for i in m.bat.len() as u64..g.bat_size {
            say(&mut r, format!("{w} cluster {i} is outside image"));
            if r.messages.len() >= MAX_MESSAGES {
                break;
            }
        }
        r.corruptions += tail;
        if fix_errors {
            r.corruptions_fixed += tail;
        }
    }
    let mut end = if high == 0 {
        m.data_end * 512
    } else {
        m.data_end = (high + g.cs) / 512;
        high + g.cs
    };
    for &p in &m.protect {
        end = end.max(p + g.cs);
    }
    r.image_end_offset = end;

    leaks(img, &mut r, fix_leaks, true)?;
    duplicates(img, &mut m, &mut r, fix_errors, fix_leaks, w)?;

    // Statistics.
    r.total_clusters = g.bat_size;
    let mut prev = 0u64;
    for i in 0..m.bat.len() as u64 {
        let off = m.host(&g, i);
        if off == 0 || off + g.cs > r.image_end_offset || off < ds {
            prev = 0;
            continue;
        }
        if prev != 0 && prev + g.cs != off {
            r.fragmented_clusters += 1;
        }
        prev = off;
        r.allocated_clusters += 1;
    }

    if fix_errors || fix_leaks {
        img.refresh(&mut m)?;
        f.sync_data()?;
    }
    Ok(r)
}

/// Space past the image end (QEMU's parallels_check_leak); `explicit` counts and reports it,
/// otherwise it is only trimmed (after a duplicate repair preallocated space).
fn leaks(img: &Parallels, r: &mut CheckReport, fix: bool, explicit: bool) -> Result<()> {
    let g = img.geometry();
    let len = fileio::file_len(&img.file)?.div_ceil(512) * 512;
    let end = r.image_end_offset;
    if len > end {
        let count = (len - end).div_ceil(g.cs);
        if explicit {
            let w = if fix { "Repairing" } else { "ERROR" };
            say(
                r,
                format!("{w} space leaked at the end of the image {}", len - end),
            );
            r.leaks += count;
        }
        if fix {
            img.file.set_len(end)?;
            if explicit {
                r.leaks_fixed += count;
            }
        }
    }
    Ok(())
}

/// BAT entries sharing a host cluster; a repair gives each later one a copy of its own.
fn duplicates(
    img: &Parallels,
    m: &mut Meta,
    r: &mut CheckReport,
    fix_errors: bool,
    fix_leaks: bool,
    w: &str,
) -> Result<()> {
    let g = img.geometry();
    let ds = m.data_start * 512;
    // Entries past the end of the file were reported as outside; the bitmap covers the file.
    let len = fileio::file_len(&img.file)?.div_ceil(512) * 512;
    let end = r.image_end_offset.min(len);
    if end <= ds {
        return Ok(());
    }
    let mut size = (end - ds) / g.cs;
    if !end.is_multiple_of(g.cs) {
        size += 1;
    }
    let mut seen = super::Bitmap::new(size);
    let mut fixed = false;
    let mut buf = Vec::new();
    for i in 0..m.bat.len() as u64 {
        let off = m.host(&g, i);
        if off == 0 || off < ds {
            continue;
        }
        let slot = (off - ds) / g.cs;
        if slot >= size {
            continue; // outside the image, reported above
        }
        if !seen.get(slot) {
            seen.put(slot, true);
            continue;
        }
        say(r, format!("{w} duplicate offset in BAT entry {i}"));
        r.corruptions += 1;
        if !fix_errors {
            continue;
        }
        let (h, _) = img.alloc(m, 1)?;
        // Copied in bounded pieces: a cluster can be 2 GiB.
        let mut done = 0;
        while done < g.cs {
            let n = (g.cs - done).min(1 << 20);
            buf.resize(n as usize, 0);
            fileio::read_full(&img.file, &mut buf, off + done)?;
            fileio::write_full(&img.file, &buf, h + done)?;
            done += n;
        }
        let v = (h / 512 / g.mult) as u32;
        img.set_bat(m, i, &[v])?;
        r.image_end_offset = r.image_end_offset.max(h + g.cs);
        let ns = (h - ds) / g.cs;
        seen.grow(ns + 1);
        seen.put(ns, true);
        fixed = true;
        r.corruptions_fixed += 1;
    }
    if fixed {
        // The allocation preallocated space past the new end.
        leaks(img, r, fix_leaks, false)?;
    }
    Ok(())
}
