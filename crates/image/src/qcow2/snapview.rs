//! Reading an internal snapshot in place (QEMU's qcow2_snapshot_load_tmp, behind
//! `measure -l` and `convert -l`): a read-only image swaps its active L1 table for the
//! snapshot's, so reads and block status show the snapshot. Nothing is written.

use super::header::{self, MAX_L1_BYTES};
use super::Qcow2;
use crate::error::{Error, Result};

pub(super) fn load_tmp(q: &Qcow2, id: Option<&str>, name: Option<&str>) -> Result<()> {
    if !q.read_only {
        return Err(Error::Invalid("Device is not readonly".into()));
    }
    let mut m = q.lock();
    let found = m.snapshots.iter().find(|s| match (id, name) {
        (Some(i), Some(n)) => s.id == i && s.name == n,
        (Some(i), None) => s.id == i,
        (None, Some(n)) => s.name == n,
        (None, None) => false,
    });
    let Some(sn) = found.cloned() else {
        return Err(Error::Invalid("Can't find snapshot".into()));
    };
    let len = sn.l1_size as u64 * 8;
    if len > MAX_L1_BYTES {
        return Err(Error::Corrupt("Snapshot L1 table too large".into()));
    }
    if len > 0 {
        header::check_table(
            sn.l1_table_offset,
            len,
            m.g.cs,
            m.file_len,
            "Snapshot L1 table",
        )?;
    }
    m.l1 = super::read_table(&m.f, sn.l1_table_offset, sn.l1_size as u64)?;
    m.drop_comp_cache();
    Ok(())
}
