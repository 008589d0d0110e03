//! raw: the guest disk byte for byte; holes in a sparse file read as zero.

use crate::driver::{Alloc, BlockDriver, Format, Preallocation, Status};
use crate::error::{invalid, Result};
use crate::fileio;
use crate::info::ImageInfo;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Raw {
    file: File,
    path: PathBuf,
    size: AtomicU64,
    read_only: bool,
}

impl Raw {
    pub fn open(path: &Path, writable: bool) -> Result<Raw> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Self::from_file(file, path, writable)
    }

    pub fn from_file(file: File, path: &Path, writable: bool) -> Result<Raw> {
        let size = fileio::file_len(&file)?;
        Ok(Raw {
            file,
            path: path.to_path_buf(),
            size: AtomicU64::new(size),
            read_only: !writable,
        })
    }

    /// Creates (or truncates) a raw image of `size` bytes.
    pub fn create(path: &Path, size: u64, prealloc: Preallocation) -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        grow(&file, 0, size, prealloc)?;
        if prealloc == Preallocation::Off && size > 0 {
            // As QEMU does: allocate the first block so that later tools can probe alignment.
            let n = size.min(4096) as usize;
            fileio::write_full(&file, &vec![0u8; n], 0)?;
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.virtual_size(), offset, len)
    }

    fn check_writable(&self) -> Result<()> {
        crate::driver::check_writable(self.read_only)
    }
}

/// Extends `file` from `old` to `new` bytes with the given preallocation.
fn grow(file: &File, old: u64, new: u64, prealloc: Preallocation) -> Result<()> {
    match prealloc {
        Preallocation::Off | Preallocation::Metadata => file.set_len(new)?,
        Preallocation::Falloc => {
            file.set_len(new)?;
            if new > old {
                fileio::fallocate(file, old, new - old)?;
            }
        }
        Preallocation::Full => {
            if new > old {
                fileio::write_zeroes_slow(file, old, new - old)?;
            }
            file.set_len(new)?;
        }
    }
    Ok(())
}

impl BlockDriver for Raw {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn filename(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &File {
        &self.file
    }
    fn virtual_size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }
    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        Ok(fileio::read_full(&self.file, buf, offset)?)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        Ok(fileio::write_full(&self.file, buf, offset)?)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        if may_unmap {
            fileio::punch_hole(&self.file, offset, len)?;
        } else {
            fileio::write_zeroes_slow(&self.file, offset, len)?;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        let end = offset + len;
        // Holes read as zero and are "present" in this layer, exactly as QEMU's file driver says.
        let data = fileio::seek_data(&self.file, offset)?;
        match data {
            Some(d) if d <= offset => {
                let hole = fileio::seek_hole(&self.file, offset)?.unwrap_or(end);
                Ok(Status {
                    alloc: Alloc::Data {
                        host: Some(offset),
                        compressed: false,
                    },
                    len: hole.min(end).max(offset + 1) - offset,
                })
            }
            Some(d) => Ok(Status {
                alloc: Alloc::Zero { host: Some(offset) },
                len: d.min(end) - offset,
            }),
            None => Ok(Status {
                alloc: Alloc::Zero { host: Some(offset) },
                len,
            }),
        }
    }

    fn resize(&self, new_size: u64, prealloc: Preallocation, shrink: bool) -> Result<()> {
        self.check_writable()?;
        let old = self.virtual_size();
        if new_size < old && !shrink {
            return invalid("Use the --shrink option to perform a shrink operation.");
        }
        grow(&self.file, old, new_size, prealloc)?;
        self.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }

    fn has_zero_init(&self) -> bool {
        // A regular file that we created or truncated reads zero; block devices do not.
        self.file
            .metadata()
            .map(|m| m.file_type().is_file())
            .unwrap_or(false)
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "raw",
            virtual_size: self.virtual_size(),
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?,
            ..Default::default()
        })
    }
}
