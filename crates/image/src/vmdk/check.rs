//! `qemu-img check` for vmdk, as QEMU's vmdk_co_check: every grain is looked up; a lookup
//! that fails or a grain past the end of its file stops the check with one corruption.
//! Repairs are not supported. Grain tables already found clean are not walked again, so a
//! directory naming one table many times costs no more than the table itself.

use super::sparse::Grain;
use super::{Kind, Vmdk};
use crate::driver::{CheckReport, Repair};
use crate::error::{Error, Result};
use crate::fileio;
use std::collections::HashSet;

pub fn check(v: &Vmdk, repair: Repair) -> Result<CheckReport> {
    if repair != Repair::None {
        return Err(Error::Unsupported(
            "This image format does not support checks".into(),
        ));
    }
    let mut r = CheckReport::default();
    let fail = |r: &mut CheckReport, msg: String, errno: &str| {
        r.messages.push(msg);
        r.corruptions += 1;
        r.fatal = Some(errno.to_string());
    };
    for e in &v.extents {
        let f = &v.files[e.fidx];
        // QEMU sees files in whole sectors.
        let flen = fileio::file_len(f)?.div_ceil(512) * 512;
        let first_sector = e.start / 512;
        match &e.kind {
            Kind::Flat { offset } => {
                if *offset >= flen {
                    fail(
                        &mut r,
                        format!("ERROR: cluster offset for sector {first_sector} points after EOF"),
                        "Invalid argument",
                    );
                    return Ok(r);
                }
            }
            Kind::Sparse(sp) => {
                let cb = sp.cluster_bytes();
                let span = sp.l1_entry_sectors * 512;
                let mut clean: HashSet<u64> = HashSet::new();
                let mut rel = 0u64;
                while rel < e.len {
                    let sector = first_sector + rel / 512;
                    let slot = match sp.slot(rel) {
                        Ok(s) => s,
                        Err(_) => {
                            fail(
                                &mut r,
                                format!("ERROR: could not get cluster_offset for sector {sector}"),
                                "Operation not permitted",
                            );
                            return Ok(r);
                        }
                    };
                    let span_start = rel / span * span;
                    let span_end = (span_start + span).min(e.len);
                    if slot.table == 0 || clean.contains(&slot.table) {
                        rel = span_end;
                        continue;
                    }
                    // Walk this table's grains inside the extent (read directly: each
                    // table is visited once, the cache is left to the readers).
                    let t = match sp.read_table(f, slot.table, flen) {
                        Ok(t) => t,
                        Err(_) => {
                            fail(
                                &mut r,
                                format!("ERROR: could not get cluster_offset for sector {sector}"),
                                "Operation not permitted",
                            );
                            return Ok(r);
                        }
                    };
                    let first = ((rel / cb) % sp.l2_size) as usize;
                    for &raw in &t[first..] {
                        if rel >= span_end {
                            break;
                        }
                        let sector = first_sector + rel / 512;
                        match sp.decode(raw) {
                            Err(_) => {
                                fail(
                                    &mut r,
                                    format!(
                                        "ERROR: could not get cluster_offset for sector {sector}"
                                    ),
                                    "Operation not permitted",
                                );
                                return Ok(r);
                            }
                            Ok(Grain::At(h)) if h >= flen => {
                                fail(
                                    &mut r,
                                    format!(
                                        "ERROR: cluster offset for sector {sector} points after EOF"
                                    ),
                                    "Invalid argument",
                                );
                                return Ok(r);
                            }
                            Ok(_) => {}
                        }
                        rel += cb;
                    }
                    rel = rel.max(span_end);
                    // Only a table walked over its whole span is known clean everywhere.
                    if span_end - span_start == span {
                        clean.insert(slot.table);
                    }
                }
            }
        }
    }
    Ok(r)
}
