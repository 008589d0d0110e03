//! The driver trait every image format implements, and the data it reports.

use crate::error::{Error, Result};
use crate::info::{ImageInfo, SnapshotInfo};
use std::fs::File;
use std::path::Path;

/// A request must lie within the virtual size.
pub(crate) fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::Invalid(format!(
            "Request out of range: offset {offset} length {len} (image size {size})"
        ))),
    }
}

pub(crate) fn check_writable(read_only: bool) -> Result<()> {
    if read_only {
        return Err(Error::ReadOnly("Image is read-only".into()));
    }
    Ok(())
}

/// The on-disk formats the block layer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    /// VHD (Virtual PC / Hyper-V gen 1); QEMU calls it vpc.
    Vpc,
    Vhdx,
    Qed,
    Parallels,
}

impl Format {
    /// Every format, in the order qemu-img lists them.
    pub const ALL: [Format; 8] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vdi,
        Format::Vpc,
        Format::Vhdx,
        Format::Qed,
        Format::Parallels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Vpc => "vpc",
            Format::Vhdx => "vhdx",
            Format::Qed => "qed",
            Format::Parallels => "parallels",
        }
    }

    pub fn from_name(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// What a range of one layer holds (QEMU's block status, for this layer only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alloc {
    /// Data stored in this layer, at `host` in this layer's file when it is addressable there.
    Data { host: Option<u64>, compressed: bool },
    /// Reads as zeros without falling through to the backing file.
    Zero { host: Option<u64> },
    /// Not in this layer: reads come from the backing file (or zeros without one).
    /// `host`: space reserved in this layer's file anyway (QEMU reports it when nothing lies below).
    Unallocated { host: Option<u64> },
    /// Allocated in this layer and read as zero from there: QEMU's DATA|ZERO, what a
    /// preallocated block over a hole in the host file reports (vdi static, vpc fixed).
    DataZero { host: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub alloc: Alloc,
    /// Bytes from the queried offset for which `alloc` holds (at least 1, at most the query).
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    #[default]
    Off,
    Metadata,
    Falloc,
    Full,
}

impl Preallocation {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "off" => Self::Off,
            "metadata" => Self::Metadata,
            "falloc" => Self::Falloc,
            "full" => Self::Full,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Metadata => "metadata",
            Self::Falloc => "falloc",
            Self::Full => "full",
        }
    }
}

/// Result of a consistency check, with qemu-img's counters.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    pub corruptions_fixed: u64,
    pub leaks_fixed: u64,
    pub image_end_offset: u64,
    pub total_clusters: u64,
    pub allocated_clusters: u64,
    pub fragmented_clusters: u64,
    pub compressed_clusters: u64,
    /// Per-problem lines, in the words qemu-img uses, printed to stderr by the CLI.
    pub messages: Vec<String>,
    /// The check itself stopped with this error (qemu-img prints the messages, then
    /// "Check failed: <fatal>", and exits 1).
    pub fatal: Option<String>,
}

/// What the caller allows a repair to fix (qemu-img check -r).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    None,
    Leaks,
    All,
}

/// One image format over one file, with its backing chain below it.
///
/// All I/O is positional and `&self`, so one open image serves several threads; drivers
/// serialize their metadata internally.
pub trait BlockDriver: Send + Sync {
    fn format(&self) -> Format;
    fn filename(&self) -> &Path;
    fn file(&self) -> &File;
    fn virtual_size(&self) -> u64;
    /// Granularity of allocation, where the format has one.
    fn cluster_size(&self) -> Option<u64> {
        None
    }
    /// The unit in which `convert` classifies and writes data for this image (default: the
    /// cluster size). Formats that write part of a block without copy-on-write say less, so
    /// that convert reads and writes only the data, as qemu-img does.
    fn write_granularity(&self) -> Option<u64> {
        self.cluster_size()
    }
    fn read_only(&self) -> bool;

    /// Reads the guest-visible content (backing chain included).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Makes the range read as zero; with `may_unmap` the space may be freed.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()>;
    /// Drops the range's data; afterwards it reads as zero or as the backing file.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;
    fn flush(&self) -> Result<()>;

    /// Status of this layer at `offset`, for a prefix of at most `len` bytes.
    fn block_status(&self, offset: u64, len: u64) -> Result<Status>;

    fn resize(&self, new_size: u64, prealloc: Preallocation, shrink: bool) -> Result<()>;

    fn backing(&self) -> Option<&dyn BlockDriver> {
        None
    }
    /// Attaches the opened backing image (only called for images that named one).
    fn set_backing(&mut self, _backing: Option<Box<dyn BlockDriver>>) {}

    /// Rewrites the backing file name and format stored in the image (rebase -u, commit,
    /// amend); `None` removes the backing file. The open backing image is not changed.
    fn change_backing_file(&self, _file: Option<&str>, _fmt: Option<&str>) -> Result<()> {
        Err(Error::Unsupported("Operation not supported".into()))
    }

    /// Drops everything this layer holds, so that every read falls through to the backing
    /// file (what `qemu-img commit` does to the committed image). Formats that cannot say so.
    fn make_empty(&self) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{} does not support emptying nodes",
            self.format().name()
        )))
    }

    fn info(&self) -> Result<ImageInfo>;

    /// Compresses one cluster for this image (None: store it uncompressed). Thread-safe and
    /// lock-free, so callers compress in parallel and write in order.
    fn compress_cluster(&self, _buf: &[u8]) -> Result<Option<Vec<u8>>> {
        Err(Error::Unsupported(format!(
            "Compression is not supported for '{}' format",
            self.format().name()
        )))
    }

    /// Stores data produced by `compress_cluster` for the cluster at `offset`.
    fn write_compressed_data(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        Err(Error::Unsupported(format!(
            "Compression is not supported for '{}' format",
            self.format().name()
        )))
    }

    /// Writes one cluster compressed (qemu-img convert -c), or plain when it does not shrink.
    fn write_compressed(&self, offset: u64, buf: &[u8]) -> Result<()> {
        match self.compress_cluster(buf)? {
            Some(c) => self.write_compressed_data(offset, &c),
            None => self.write_at(buf, offset),
        }
    }

    /// Whether unwritten areas of a fresh image read as zero without any write.
    fn has_zero_init(&self) -> bool {
        false
    }

    /// Data can only be written compressed (vmdk streamOptimized): convert compresses even
    /// without -c, as qemu-img does.
    fn needs_compressed_writes(&self) -> bool {
        false
    }

    /// Name of the file holding this layer's data at guest `offset`, when that is not
    /// `filename()` (vmdk extents in their own files); `qemu-img map` shows it.
    fn data_file_name(&self, _offset: u64) -> Option<String> {
        None
    }

    /// `Alloc::Zero` with a host offset means allocated data over a hole of the host file
    /// (vmdk flat extents), which QEMU reports as data that reads zero.
    fn zero_holes_are_data(&self) -> bool {
        false
    }

    fn check(&self, _repair: Repair) -> Result<CheckReport> {
        Err(Error::Unsupported(
            "This image format does not support checks".into(),
        ))
    }

    /// The concrete driver, for format-specific operations (qcow2 amend and bitmaps).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(Vec::new())
    }
    // Formats without internal snapshots answer with the words qemu-img prints for them.
    fn snapshot_create(&self, _name: &str) -> Result<()> {
        Err(Error::Unsupported("Operation not supported".into()))
    }
    fn snapshot_apply(&self, _name: &str) -> Result<()> {
        Err(Error::Unsupported(
            "Block driver does not support snapshots".into(),
        ))
    }
    fn snapshot_delete(&self, _name: &str) -> Result<()> {
        Err(Error::Unsupported("snapshot not found".into()))
    }
    /// Makes a read-only image show internal snapshot `id` and/or `name` instead of its
    /// current state (QEMU's bdrv_snapshot_load_tmp, for `measure -l` and `convert -l`).
    fn snapshot_load_tmp(&self, _id: Option<&str>, _name: Option<&str>) -> Result<()> {
        Err(Error::Unsupported(format!(
            "Block format '{}' used by device '' does not support temporarily loading internal snapshots",
            self.format().name()
        )))
    }
}
