//! Format-independent description of an image, the data behind `info`.

#[derive(Debug, Clone, Default)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    pub vm_state_size: u64,
    pub date_sec: u64,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub icount: Option<u64>,
    pub disk_size: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Qcow2Info {
    pub compat: &'static str,
    pub compression_type: &'static str,
    pub lazy_refcounts: bool,
    pub refcount_bits: u32,
    pub corrupt: bool,
    pub extended_l2: bool,
    pub data_file: Option<String>,
    pub bitmaps: Vec<BitmapInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct BitmapInfo {
    pub name: String,
    pub granularity: u64,
    pub flags: Vec<&'static str>,
}

/// vmdk's "Format specific information".
#[derive(Debug, Clone, Default)]
pub struct VmdkInfo {
    pub cid: u32,
    pub parent_cid: u32,
    pub create_type: String,
    pub extents: Vec<VmdkExtentInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct VmdkExtentInfo {
    pub filename: String,
    /// The extent's type in its descriptor line (FLAT, SPARSE...); empty for monolithic files.
    pub format: String,
    pub virtual_size: u64,
    /// None for flat extents.
    pub cluster_size: Option<u64>,
    pub compressed: bool,
}

/// A child node besides "file" (a file holding part of the image, like a vmdk extent).
#[derive(Debug, Clone, Default)]
pub struct ChildInfo {
    /// Node name, e.g. "extents.0".
    pub name: String,
    pub filename: String,
    pub actual_size: u64,
    pub file_length: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub filename: String,
    pub format: &'static str,
    pub virtual_size: u64,
    /// Bytes allocated on the host for the file.
    pub actual_size: u64,
    pub file_length: u64,
    pub cluster_size: Option<u64>,
    pub backing_filename: Option<String>,
    /// Backing file name resolved relative to the image.
    pub full_backing_filename: Option<String>,
    pub backing_format: Option<String>,
    pub dirty: bool,
    pub snapshots: Vec<SnapshotInfo>,
    pub qcow2: Option<Qcow2Info>,
    /// The format has no driver info (QEMU's bdrv_get_info, e.g. parallels): `info` then
    /// shows no dirty flag.
    pub no_driver_info: bool,
    pub vmdk: Option<VmdkInfo>,
    /// Child nodes other than "file", in the order qemu-img lists them (before "file").
    pub children: Vec<ChildInfo>,
}
