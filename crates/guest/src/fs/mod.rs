//! The filesystem trait every reader implements (ext2/3/4, XFS, vfat, ISO 9660, NTFS), inode-based
//! like FUSE's low-level API, so that path walking, symlink resolution and mounts are done
//! once, above the readers, with the same confinement rules for every filesystem.

use crate::error::Result;

pub mod ext4;
pub mod fat;
pub mod iso9660;
pub mod ntfs;
pub mod xfs;

/// An inode number, or for filesystems without inodes (vfat, ISO 9660) a stable identifier
/// the reader derives from the on-disk location of the entry. The root is [`Filesystem::root`].
pub type Ino = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Unknown,
}

impl FileType {
    /// The S_IFMT bits of `st_mode`.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
            FileType::Unknown => 0,
        }
    }

    /// The file type byte of Linux directory entries (ext2's FT_*, XFS's ftype).
    pub fn from_dirent(t: u8) -> FileType {
        match t {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }

    pub fn from_mode(mode: u32) -> FileType {
        match mode & 0o170000 {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => FileType::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

/// What `stat(2)` gives, as far as the filesystem records it (zeros where it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: Ino,
    pub kind: FileType,
    /// Full `st_mode`: type bits and permission bits.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte units allocated.
    pub blocks: u64,
    pub blksize: u32,
    /// Device number of a character or block device (Linux `makedev` encoding).
    pub rdev: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Birth time where the filesystem records one.
    pub crtime: Option<Timespec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Raw name bytes (never "." or "..", never empty, never containing '/' or NUL: readers
    /// reject such names as corrupt).
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: FileType,
}

/// Whether an on-disk name can be a directory entry name at all: non-empty, without '/' or
/// NUL (readers report anything else as corrupt rather than hand it to path code).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&b'/') && !name.contains(&0)
}

/// `statvfs(2)` figures, for virt-df.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatFs {
    pub bsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub namemax: u64,
}

/// Identity of a filesystem, as blkid and libguestfs' vfs-type/vfs-label/vfs-uuid show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsInfo {
    /// "ext2", "ext3", "ext4", "xfs", "vfat", "iso9660", "btrfs", "ntfs", "swap", ...
    pub kind: String,
    pub label: Option<String>,
    /// As blkid prints it (lowercase dashed for ext/xfs/btrfs, "XXXX-XXXX" for vfat, ...).
    pub uuid: Option<String>,
}

/// A read-only filesystem. Implementations validate every on-disk field before use: a
/// corrupt structure is an `Error::Corrupt`, never a panic, a hang or an allocation sized by
/// an unchecked field.
pub trait Filesystem: Send + Sync {
    fn info(&self) -> FsInfo;
    fn root(&self) -> Ino;
    fn stat(&self, ino: Ino) -> Result<Stat>;
    /// Entries of a directory, "." and ".." left out, in on-disk order.
    fn read_dir(&self, ino: Ino) -> Result<Vec<DirEntry>>;
    /// The entry `name` in directory `dir`, if any. The default scans `read_dir`; readers
    /// with indexed directories (ext4 htree, XFS btrees) may do better.
    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        Ok(self.read_dir(dir)?.into_iter().find(|e| e.name == name))
    }
    /// Reads file data at `off`; returns the bytes read (short only at end of file).
    fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize>;
    /// The target of a symbolic link, raw bytes.
    fn readlink(&self, ino: Ino) -> Result<Vec<u8>>;
    /// Extended attributes (name, value), e.g. "security.selinux", "user.x".
    fn xattrs(&self, _ino: Ino) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }
    fn statfs(&self) -> Result<StatFs>;
}

/// Opens the filesystem of type `kind` (as [`FsInfo::kind`] names it) on `dev`.
/// Each reader adds its arm here.
pub fn open(
    dev: std::sync::Arc<dyn crate::dev::BlockDev>,
    kind: &str,
) -> Result<std::sync::Arc<dyn Filesystem>> {
    match kind {
        "ext2" | "ext3" | "ext4" => Ok(std::sync::Arc::new(ext4::Ext4::open(dev)?)),
        "vfat" | "msdos" => Ok(std::sync::Arc::new(fat::FatFs::open(dev)?)),
        "iso9660" => Ok(std::sync::Arc::new(iso9660::IsoFs::open(dev)?)),
        "xfs" => Ok(std::sync::Arc::new(xfs::Xfs::open(dev)?)),
        "ntfs" => Ok(std::sync::Arc::new(ntfs::NtfsFs::open(dev)?)),
        _ => Err(crate::error::Error::Unsupported(format!(
            "reading {kind} filesystems is not supported"
        ))),
    }
}
