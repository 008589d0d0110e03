//! `virtkit img ova-export`: disks into an OVA (OVF 1.0 descriptor, streamOptimized vmdk
//! disks, manifest), the package VirtualBox's and VMware's OVF import documentation describes.

use crate::archive;
use crate::descriptor::{self, ExportDisk, ExportSpec};
use crate::error::{Error, Result};
use crate::manifest::{self, Algo};
use std::path::{Path, PathBuf};
use virtkit_image::convert::{convert, ConvertOptions};
use virtkit_image::{BlockDriver, Format, OpenOptions};

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub name: String,
    pub cpus: u64,
    pub memory_mib: u64,
    pub algo: Algo,
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct ExportReport {
    pub files: Vec<(String, u64)>,
}

pub fn export(
    disks: &[(PathBuf, Option<Format>)],
    out: &Path,
    o: &ExportOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ExportReport> {
    descriptor::check_package_name(&o.name)?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".virtkit-ova-")
        .tempdir_in(dir)?;
    let srcs: Vec<Box<dyn BlockDriver>> = disks
        .iter()
        .map(|(p, f)| {
            virtkit_image::open(
                p,
                &OpenOptions {
                    format: *f,
                    ..Default::default()
                },
            )
            .map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
        })
        .collect::<Result<_>>()?;
    let total: u64 = srcs.iter().map(|s| s.virtual_size()).sum();
    let mut done = 0u64;
    let mut spec = ExportSpec {
        name: o.name.clone(),
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        disks: Vec::new(),
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (i, src) in srcs.iter().enumerate() {
        let href = format!("{}-disk{}.vmdk", o.name, i + 1);
        let path = work.path().join(&href);
        let size = src.virtual_size();
        let plan = virtkit_image::create::plan(
            Format::Vmdk,
            &[
                ("subformat".into(), "streamOptimized".into()),
                ("size".into(), size.to_string()),
            ],
        )?;
        plan.create(&path)?;
        let dst = virtkit_image::open(
            &path,
            &OpenOptions {
                format: Some(Format::Vmdk),
                writable: true,
                ..Default::default()
            },
        )?;
        let co = ConvertOptions {
            compress: true,
            threads: o.threads,
            target_zero_init: dst.has_zero_init(),
            ..Default::default()
        };
        convert(&[src.as_ref()], dst.as_ref(), &co, &|n, _| {
            progress(done + n, total)
        })?;
        dst.flush()?;
        drop(dst);
        done += size;
        let populated = populated_bytes(src.as_ref())?;
        spec.disks.push(ExportDisk {
            file_size: std::fs::metadata(&path)?.len(),
            href: href.clone(),
            capacity: size,
            populated_size: Some(populated),
        });
        files.push((href, path));
    }
    let ovf_name = format!("{}.ovf", o.name);
    let ovf_path = work.path().join(&ovf_name);
    std::fs::write(&ovf_path, descriptor::write(&spec))?;
    let mut entries = Vec::new();
    for (name, path) in std::iter::once(&(ovf_name.clone(), ovf_path.clone())).chain(files.iter()) {
        entries.push(manifest::Entry {
            algo: o.algo,
            file: name.clone(),
            digest: manifest::hash_file(path, o.algo)?,
        });
    }
    let mf_name = format!("{}.mf", o.name);
    let mf_path = work.path().join(&mf_name);
    std::fs::write(&mf_path, manifest::write(&entries))?;

    // Descriptor first, then the manifest, then the files in References order (DSP0243).
    let mut order: Vec<(String, &Path)> = vec![
        (ovf_name.clone(), ovf_path.as_path()),
        (mf_name.clone(), mf_path.as_path()),
    ];
    order.extend(files.iter().map(|(n, p)| (n.clone(), p.as_path())));
    let mut tmp = tempfile::Builder::new()
        .prefix(".virtkit-ova-")
        .tempfile_in(dir)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        archive::write(&mut w, &order)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(out).map_err(|e| Error::Io(e.error))?;
    let report = ExportReport {
        files: order
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect(),
    };
    Ok(report)
}

/// Guest bytes that hold data (ovf:populatedSize): the chain's allocated, non-zero ranges.
fn populated_bytes(img: &dyn BlockDriver) -> Result<u64> {
    let size = img.virtual_size();
    let mut off = 0;
    let mut n = 0;
    while off < size {
        let e = virtkit_image::map::chain_status(img, off, size - off)?;
        if e.data && !e.zero {
            n += e.length;
        }
        off += e.length.max(1);
    }
    Ok(n)
}
