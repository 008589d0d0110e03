//! `virtkit img ova-import`: unpack an OVA, verify its manifest, read the descriptor and
//! convert the disks it references into images of the chosen format.

use crate::archive::{Entry, Package};
use crate::descriptor::{self, Envelope};
use crate::error::{invalid, Error, Result};
use crate::manifest::{self, Algo, Hasher};
use std::path::{Path, PathBuf};
use virtkit_image::convert::{convert, ConvertOptions};
use virtkit_image::{BlockDriver, Format, OpenOptions};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub format: Format,
    /// `-o` creation options for the output images.
    pub create_opts: Vec<(String, String)>,
    pub dest_dir: PathBuf,
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct ImportedDisk {
    pub disk_id: String,
    /// File name inside the package.
    pub href: String,
    /// Format found in the file.
    pub source_format: Format,
    pub capacity: u64,
    pub output: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ImportReport {
    pub descriptor: String,
    pub envelope: Envelope,
    /// Digest algorithm of the verified manifest; None when the package has none.
    pub manifest: Option<Algo>,
    pub disks: Vec<ImportedDisk>,
}

/// Progress of the whole import: bytes done and total (copying plus converting).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

fn ext_of(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Disk format from the OVF format URI (`...vmdk.html#streamOptimized`), else from the file.
fn format_hint(uri: Option<&str>) -> Option<Format> {
    let u = uri?.to_ascii_lowercase();
    if u.contains("vmdk") {
        Some(Format::Vmdk)
    } else if u.contains("vhdx") {
        Some(Format::Vhdx)
    } else if u.contains("vhd") {
        Some(Format::Vpc)
    } else if u.contains("qcow2") {
        Some(Format::Qcow2)
    } else {
        None
    }
}

pub fn import(ova: &Path, o: &ImportOptions, progress: Progress) -> Result<ImportReport> {
    let pkg = Package::open(ova)?;
    let ovfs: Vec<&Entry> = pkg
        .entries
        .iter()
        .filter(|e| ext_of(&e.name).as_deref() == Some("ovf"))
        .collect();
    let ovf = match ovfs.as_slice() {
        [one] => *one,
        [] => return invalid("the package has no OVF descriptor (*.ovf)"),
        _ => return invalid("the package has more than one OVF descriptor"),
    };
    let mfs: Vec<&Entry> = pkg
        .entries
        .iter()
        .filter(|e| ext_of(&e.name).as_deref() == Some("mf"))
        .collect();
    let manifest = match mfs.as_slice() {
        [] => None,
        [one] => {
            let text = pkg.read_small(one, manifest::MAX_MANIFEST_LEN)?;
            let text = String::from_utf8(text)
                .map_err(|_| Error::Invalid(format!("manifest '{}' is not text", one.name)))?;
            Some(manifest::parse(&text).map_err(|e| {
                Error::Invalid(format!("manifest '{}': {e}", one.name.escape_debug()))
            })?)
        }
        _ => return invalid("the package has more than one manifest (*.mf)"),
    };
    // A manifest must name only files that exist, and every file we use must be in it.
    if let Some(m) = &manifest {
        for e in m {
            if pkg.entry(&e.file).is_none() {
                return invalid(format!(
                    "manifest lists '{}', which the package does not hold",
                    e.file.escape_debug()
                ));
            }
        }
    }
    let expect = |name: &str| -> Result<Option<&manifest::Entry>> {
        match &manifest {
            None => Ok(None),
            Some(m) => m.iter().find(|e| e.file == name).map(Some).ok_or_else(|| {
                Error::Invalid(format!(
                    "manifest does not list '{}'; its contents cannot be verified",
                    name.escape_debug()
                ))
            }),
        }
    };
    let verify = |name: &str, want: Option<&manifest::Entry>, h: Option<Hasher>| -> Result<()> {
        if let (Some(w), Some(h)) = (want, h) {
            let got = h.hex();
            if got != w.digest {
                return invalid(format!(
                    "{} digest of '{}' does not match the manifest (package damaged or altered)",
                    w.algo.name(),
                    name.escape_debug()
                ));
            }
        }
        Ok(())
    };

    let ovf_bytes = pkg.read_small(ovf, descriptor::MAX_DESCRIPTOR_LEN)?;
    let want = expect(&ovf.name)?;
    let mut h = want.map(|w| Hasher::new(w.algo));
    if let Some(h) = h.as_mut() {
        h.update(&ovf_bytes);
    }
    verify(&ovf.name, want, h)?;
    let text = String::from_utf8(ovf_bytes)
        .map_err(|_| Error::Invalid(format!("'{}' is not UTF-8 text", ovf.name)))?;
    let env = descriptor::parse(&text)
        .map_err(|e| Error::Invalid(format!("'{}': {e}", ovf.name.escape_debug())))?;

    // Disks in the order the first virtual system attaches them, then any others.
    let mut order: Vec<&descriptor::Disk> = Vec::new();
    if let Some(sys) = env.systems.first() {
        for a in &sys.disks {
            if let Some(d) = env.disks.iter().find(|d| d.id == a.disk_id) {
                if !order.iter().any(|x| x.id == d.id) {
                    order.push(d);
                }
            }
        }
    }
    for d in &env.disks {
        if !order.iter().any(|x| x.id == d.id) {
            order.push(d);
        }
    }
    let mut jobs = Vec::new();
    for d in order {
        let Some(fref) = &d.file_ref else {
            // A blank disk: created empty at its capacity.
            jobs.push((d, None));
            continue;
        };
        let f = env
            .files
            .iter()
            .find(|f| &f.id == fref)
            .expect("validated by descriptor::parse");
        if let Some(c) = &f.compression {
            return Err(Error::Unsupported(format!(
                "file '{}' is stored with ovf:compression=\"{c}\", which is not supported",
                f.href.escape_debug()
            )));
        }
        let e = pkg.entry(&f.href).ok_or_else(|| {
            Error::Invalid(format!(
                "the descriptor references '{}', which the package does not hold",
                f.href.escape_debug()
            ))
        })?;
        jobs.push((d, Some(e)));
    }
    let total: u64 = jobs
        .iter()
        .map(|(d, e)| e.map(|e| e.size).unwrap_or(0) + d.capacity)
        .sum();
    let done = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(&o.dest_dir)?;

    let mut disks = Vec::new();
    let mut outputs: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<()> {
        for (d, e) in jobs {
            let stem = match e {
                Some(e) => Path::new(&e.name)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| d.id.clone()),
                None => d.id.clone(),
            };
            descriptor::check_package_name(&stem)?;
            let output = o.dest_dir.join(format!("{stem}.{}", o.format.name()));
            if output.exists() {
                return invalid(format!(
                    "'{}' already exists; not overwriting it",
                    output.display()
                ));
            }
            let base = done.load(std::sync::atomic::Ordering::Relaxed);
            let (src_fmt, capacity) = match e {
                None => {
                    create(&output, o, d.capacity)?;
                    outputs.push(output.clone());
                    (o.format, d.capacity)
                }
                Some(e) => {
                    let tmp = tempfile::Builder::new()
                        .prefix(".virtkit-ova-")
                        .tempfile_in(&o.dest_dir)?;
                    let want = expect(&e.name)?;
                    let mut h = want.map(|w| Hasher::new(w.algo));
                    {
                        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
                        pkg.copy_to(e, &mut w, h.as_mut(), &|n| progress(base + n, total))?;
                        std::io::Write::flush(&mut w)?;
                    }
                    verify(&e.name, want, h)?;
                    let fmt = match format_hint(d.format.as_deref()) {
                        Some(f) => f,
                        None => virtkit_image::chain::probe(tmp.path())?,
                    };
                    let src = virtkit_image::open(
                        tmp.path(),
                        &OpenOptions {
                            format: Some(fmt),
                            no_backing: true,
                            ..Default::default()
                        },
                    )
                    .map_err(|err| {
                        Error::Invalid(format!(
                            "disk '{}' is not a readable {} image: {}",
                            e.name.escape_debug(),
                            fmt.name(),
                            err
                        ))
                    })?;
                    if src.backing().is_some() {
                        return invalid(format!("disk '{}' has a backing file", e.name));
                    }
                    let cap = src.virtual_size();
                    create(&output, o, cap)?;
                    outputs.push(output.clone());
                    let dst = virtkit_image::open(
                        &output,
                        &OpenOptions {
                            format: Some(o.format),
                            writable: true,
                            ..Default::default()
                        },
                    )?;
                    let copied = e.size;
                    let co = ConvertOptions {
                        threads: o.threads,
                        target_zero_init: dst.has_zero_init(),
                        ..Default::default()
                    };
                    convert(
                        &[src.as_ref() as &dyn BlockDriver],
                        dst.as_ref(),
                        &co,
                        &|n, _| progress(base + copied + n, total),
                    )?;
                    dst.flush()?;
                    (fmt, cap)
                }
            };
            done.fetch_add(
                e.map(|e| e.size).unwrap_or(0) + d.capacity,
                std::sync::atomic::Ordering::Relaxed,
            );
            disks.push(ImportedDisk {
                disk_id: d.id.clone(),
                href: e.map(|e| e.name.clone()).unwrap_or_default(),
                source_format: src_fmt,
                capacity,
                output,
            });
        }
        Ok(())
    })();
    if let Err(err) = result {
        // Nothing half-imported is left behind.
        for p in &outputs {
            let _ = std::fs::remove_file(p);
        }
        return Err(err);
    }
    Ok(ImportReport {
        descriptor: ovf.name.clone(),
        manifest: manifest.and_then(|m| m.first().map(|e| e.algo)),
        envelope: env,
        disks,
    })
}

fn create(output: &Path, o: &ImportOptions, size: u64) -> Result<()> {
    let mut opts = o.create_opts.clone();
    opts.retain(|(k, _)| k != "size");
    opts.push(("size".into(), size.to_string()));
    let plan = virtkit_image::create::plan(o.format, &opts)?;
    plan.create(output)?;
    Ok(())
}
