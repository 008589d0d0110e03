//! image: daemonless import of container images into runtime bundles (podman-like).
//!
//! Sources: an OCI image layout (directory or tar) or a docker-archive tar (`docker save`,
//! `skopeo copy ... docker-archive:`), detected by content. Every blob read is verified: the
//! manifest and config against their digests, each layer's compressed stream against its
//! digest and its uncompressed tar against the config's `rootfs.diff_ids`. Layers are unpacked
//! (gzip, zstd or plain, detected by magic) once into a shared store keyed by diff_id
//! ([`store`]), in overlayfs format ([`unpack`]); the bundle gets a `config.json` converted
//! from the image config ([`conversion`]) and a rootfs that is an overlay mount over the layers
//! ([`rootfs`]).
//!
//! Bundle layout: `config.json`, `rootfs/` (the mount point), `.virtkit/upper`,
//! `.virtkit/work`, `.virtkit/rootfs.json` (what to mount again after a reboot).

pub mod conversion;
pub mod digest;
pub mod docker_archive;
pub mod manifest;
pub mod merged;
pub mod oci_layout;
pub mod rootfs;
pub mod source;
pub mod store;
pub mod tar_reader;
pub mod unpack;
pub mod user;

pub use conversion::Overrides;
pub use rootfs::{mount_rootfs, unmount_rootfs};
pub use store::{list_layers, prune, DEFAULT_STORE};
pub use unpack::{unpack_layer, UnpackLimits, UnpackStats};

use digest::{HashingReader, Sha256Digest};
use source::Source;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image: {0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{blob}: {msg}")]
    Blob { blob: String, msg: String },
    #[error("{blob}: sha256 is {actual}, expected {expected}: corrupt or tampered blob")]
    DigestMismatch {
        blob: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{blob}: uncompressed content has diff_id {actual}, but the image config lists {expected}"
    )]
    DiffIdMismatch {
        blob: String,
        expected: String,
        actual: String,
    },
    #[error("{blob}: member {entry:?} refused: {reason}")]
    UnsafeEntry {
        blob: String,
        entry: String,
        reason: String,
    },
    #[error("{blob}: tar {source}")]
    Tar {
        blob: String,
        #[source]
        source: tar_reader::TarError,
    },
    #[error("{source_path}: no image {reference:?}; available: {available}")]
    NotFound {
        reference: String,
        source_path: String,
        available: String,
    },
    #[error("{source_path} holds several images ({available}): choose one with --ref")]
    Ambiguous {
        source_path: String,
        available: String,
    },
    #[error("image user {user:?}: {msg}")]
    User { user: String, msg: String },
    #[error("rootfs mount at {}: {msg}", target.display())]
    Mount { target: PathBuf, msg: String },
}

/// How to import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The layer store (default [`DEFAULT_STORE`]).
    pub store: PathBuf,
    /// Which image of the source: a tag / ref name (`busybox`, `busybox:1.36`, a bare
    /// `org.opencontainers.image.ref.name` such as `v1`) or an image id (`sha256:...`).
    pub reference: Option<String>,
    /// Mount the rootfs overlay after importing (default true).
    pub mount: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            store: PathBuf::from(DEFAULT_STORE),
            reference: None,
            mount: true,
        }
    }
}

/// One layer of an imported image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the uncompressed layer tar.
    pub diff_id: String,
    /// The unpacked layer (an overlayfs lowerdir).
    pub dir: PathBuf,
    /// Already in the store (not read again).
    pub reused: bool,
    /// Bytes of file data in the layer.
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct ImportReport {
    pub bundle: PathBuf,
    /// The reference chosen, or the manifest / config digest when the image has no name.
    pub image: String,
    /// Bottom layer first.
    pub layers: Vec<LayerInfo>,
    /// `sha256:<hex>` of the image config (docker's image id).
    pub config_digest: String,
    /// Things not kept or not done, for the user to see (device nodes skipped unprivileged,
    /// volumes not mounted...).
    pub notes: Vec<String>,
}

/// A blob to read: a member name, and what it must hash to when known.
#[derive(Clone, Debug)]
pub(crate) struct BlobRef {
    pub name: String,
    pub digest: Option<Sha256Digest>,
    pub size: Option<u64>,
}

/// The image chosen in a source.
#[derive(Clone, Debug)]
pub(crate) struct ImagePlan {
    pub image: String,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

/// Largest JSON document read (index, manifest, config, manifest.json).
pub(crate) const MAX_JSON: u64 = 32 << 20;

/// Reads a small blob and checks its size and digest.
pub(crate) fn read_verified(src: &Source, b: &BlobRef, limit: u64) -> Result<Vec<u8>, ImageError> {
    let bytes = src.read_small(&b.name, limit)?;
    if let Some(s) = b.size {
        if s != bytes.len() as u64 {
            return Err(ImageError::Blob {
                blob: src.describe(&b.name),
                msg: format!("{} bytes, the descriptor says {s}", bytes.len()),
            });
        }
    }
    if let Some(d) = &b.digest {
        let got = Sha256Digest::of(&bytes);
        if &got != d {
            return Err(ImageError::DigestMismatch {
                blob: src.describe(&b.name),
                expected: d.to_string(),
                actual: got.to_string(),
            });
        }
    }
    Ok(bytes)
}

/// Imports the image at `source` (OCI layout directory or tar, docker-archive tar or
/// directory) into the bundle directory `bundle`.
pub fn import(
    source: &Path,
    bundle: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, ImageError> {
    import_with(source, bundle, opts, &Overrides::default())
}

/// [`import`] with the image's Entrypoint/Cmd/Env/User/WorkingDir overridden.
pub fn import_with(
    source: &Path,
    bundle: &Path,
    opts: &ImportOptions,
    ov: &Overrides,
) -> Result<ImportReport, ImageError> {
    import_with_limits(source, bundle, opts, ov, &UnpackLimits::default())
}

/// [`import_with`] with other bounds on what a layer may hold (smaller ones for fuzzing).
pub fn import_with_limits(
    source: &Path,
    bundle: &Path,
    opts: &ImportOptions,
    ov: &Overrides,
    limits: &UnpackLimits,
) -> Result<ImportReport, ImageError> {
    if bundle.join("config.json").exists() {
        return Err(ImageError::Invalid(format!(
            "{}: already a bundle (config.json exists)",
            bundle.display()
        )));
    }
    let src = Source::open(source)?;
    let plan = if docker_archive::is_archive(&src) {
        docker_archive::plan(&src, opts.reference.as_deref())?
    } else if oci_layout::is_layout(&src) {
        oci_layout::plan(&src, opts.reference.as_deref())?
    } else {
        return Err(ImageError::Invalid(format!(
            "{}: neither a docker-archive (no manifest.json) nor an OCI image layout (no oci-layout and index.json)",
            src.label
        )));
    };

    let config_bytes = read_verified(&src, &plan.config, MAX_JSON)?;
    let config_digest = Sha256Digest::of(&config_bytes);
    let (config, diff_ids) =
        manifest::parse_config(&config_bytes).map_err(|msg| ImageError::Blob {
            blob: src.describe(&plan.config.name),
            msg,
        })?;
    let mut notes = Vec::new();
    if config.os().to_string() != "linux" {
        return Err(ImageError::Blob {
            blob: src.describe(&plan.config.name),
            msg: format!("an image for {}, not linux", config.os()),
        });
    }
    if config.architecture().to_string() != manifest::host_arch() {
        notes.push(format!(
            "the image is for {}, this host is {}",
            config.architecture(),
            manifest::host_arch()
        ));
    }
    if diff_ids.len() != plan.layers.len() {
        return Err(ImageError::Blob {
            blob: src.describe(&plan.config.name),
            msg: format!(
                "rootfs.diff_ids lists {} layers, the manifest {}",
                diff_ids.len(),
                plan.layers.len()
            ),
        });
    }

    let store = store::Store::open(&opts.store, false)?;
    let mut layers: Vec<LayerInfo> = Vec::new();
    for (i, (blob, diff_id)) in plan.layers.iter().zip(&diff_ids).enumerate() {
        if let Some(m) = store.get(diff_id) {
            layers.push(LayerInfo {
                diff_id: diff_id.to_string(),
                dir: store.diff_dir(diff_id),
                reused: true,
                size: m.size,
            });
            continue;
        }
        let lowers: Vec<PathBuf> = layers.iter().rev().map(|l| l.dir.clone()).collect();
        let label = format!(
            "layer {}/{}: {}",
            i + 1,
            plan.layers.len(),
            src.describe(&blob.name)
        );
        let (meta, layer_notes) =
            unpack_blob(&src, blob, diff_id, &store, &lowers, &label, limits)?;
        notes.extend(layer_notes);
        layers.push(LayerInfo {
            diff_id: diff_id.to_string(),
            dir: store.diff_dir(diff_id),
            reused: false,
            size: meta.size,
        });
    }

    // The bundle.
    std::fs::create_dir_all(bundle).map_err(|e| ImageError::Io {
        path: bundle.to_path_buf(),
        source: e,
    })?;
    let bundle = std::fs::canonicalize(bundle).map_err(|e| ImageError::Io {
        path: bundle.to_path_buf(),
        source: e,
    })?;
    let rootfs_dir = bundle.join("rootfs");
    if rootfs::is_mounted(&rootfs_dir) {
        return Err(ImageError::Invalid(format!(
            "{}: something is mounted there",
            rootfs_dir.display()
        )));
    }
    if std::fs::read_dir(&rootfs_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ImageError::Invalid(format!(
            "{}: not empty",
            rootfs_dir.display()
        )));
    }
    // A layer listed twice (old images repeat the empty layer) is kept once, at its topmost
    // place: the lower copy can only show what the upper one shows too.
    let mut lowerdirs: Vec<PathBuf> = Vec::new();
    for l in layers.iter().rev() {
        if !lowerdirs.contains(&l.dir) {
            lowerdirs.push(l.dir.clone());
        }
    }
    rootfs::prepare_dirs(&bundle, lowerdirs.first().map(PathBuf::as_path))?;

    let view = merged::MergedView::open(&lowerdirs).map_err(|e| ImageError::Io {
        path: store.root().to_path_buf(),
        source: e,
    })?;
    let user_str = ov
        .user
        .clone()
        .or_else(|| config.config().as_ref().and_then(|c| c.user().clone()))
        .unwrap_or_default();
    let user = user::resolve_in(&view, &user_str)?;
    let (spec, conv_notes) = conversion::to_spec(conversion::base_spec(), &config, &user, ov);
    notes.extend(conv_notes);
    let cfg_path = bundle.join("config.json");
    let tmp = bundle.join(".config.json.tmp");
    let body = serde_json::to_vec_pretty(&spec).map_err(|e| ImageError::Invalid(e.to_string()))?;
    std::fs::write(&tmp, body).map_err(|e| ImageError::Io {
        path: tmp.clone(),
        source: e,
    })?;
    std::fs::rename(&tmp, &cfg_path).map_err(|e| ImageError::Io {
        path: cfg_path.clone(),
        source: e,
    })?;

    rootfs::write_record(
        &bundle,
        &rootfs::RootfsRecord {
            version: 1,
            store: store.root().to_path_buf(),
            layers: layers.iter().map(|l| l.diff_id.clone()).collect(),
            lowerdirs,
            upperdir: PathBuf::from(".virtkit/upper"),
            workdir: PathBuf::from(".virtkit/work"),
            target: PathBuf::from("rootfs"),
        },
    )?;
    if opts.mount {
        mount_rootfs(&bundle)?;
    }
    drop(store);
    Ok(ImportReport {
        bundle,
        image: plan.image,
        layers,
        config_digest: config_digest.to_string(),
        notes,
    })
}

/// Streams a layer blob through digest checks and decompression into a new store layer.
fn unpack_blob(
    src: &Source,
    blob: &BlobRef,
    diff_id: &Sha256Digest,
    store: &store::Store,
    lowers: &[PathBuf],
    label: &str,
    limits: &UnpackLimits,
) -> Result<(store::LayerMeta, Vec<String>), ImageError> {
    let (r, size) = src.open_member(&blob.name)?;
    if let Some(s) = blob.size {
        if s != size {
            return Err(ImageError::Blob {
                blob: label.to_string(),
                msg: format!("{size} bytes, the manifest says {s}"),
            });
        }
    }
    let tmp = store.begin(diff_id)?;
    let result = unpack_stream(r, &tmp.join("diff"), lowers, label, limits).and_then(
        |(unpacked, blob_digest, diff)| {
            // A corrupt blob is named as such first, whatever unpacking made of it.
            if let Some(want) = &blob.digest {
                if want != &blob_digest {
                    return Err(ImageError::DigestMismatch {
                        blob: label.to_string(),
                        expected: want.to_string(),
                        actual: blob_digest.to_string(),
                    });
                }
            }
            let stats = unpacked?;
            if let Some(diff) = diff.filter(|d| d != diff_id) {
                return Err(ImageError::DiffIdMismatch {
                    blob: label.to_string(),
                    expected: diff_id.to_string(),
                    actual: diff.to_string(),
                });
            }
            let meta = store::LayerMeta {
                diff_id: diff_id.to_string(),
                size: stats.bytes,
                entries: stats.entries,
                source: label.to_string(),
            };
            store.commit(&tmp, &meta)?;
            Ok((meta, stats.notes))
        },
    );
    if result.is_err() {
        store.abort(&tmp);
    }
    result
}

/// Longest stretch of data accepted after a layer's end-of-archive marker (tar pads to 10
/// KiB records; more is not a tar writer's doing).
const MAX_TRAILING: u64 = 1 << 20;

/// Decompresses and unpacks. Returns the unpack outcome, the blob's digest, and the
/// uncompressed stream's digest (`None` when unpacking stopped early: the stream is then not
/// decompressed further, only the blob is read to its end).
#[allow(clippy::type_complexity)]
fn unpack_stream(
    r: Box<dyn Read + '_>,
    dest: &Path,
    lowers: &[PathBuf],
    label: &str,
    limits: &UnpackLimits,
) -> Result<
    (
        Result<UnpackStats, ImageError>,
        Sha256Digest,
        Option<Sha256Digest>,
    ),
    ImageError,
> {
    let io_err = |e: io::Error| ImageError::Blob {
        blob: label.to_string(),
        msg: e.to_string(),
    };
    let mut buffered = BufReader::with_capacity(1 << 16, HashingReader::new(r));
    let magic = buffered.fill_buf().map_err(io_err)?.to_vec();
    let (outcome, diff) = {
        let decoder: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut buffered))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(&mut buffered).map_err(io_err)?)
        } else if magic.starts_with(b"BZh") || magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        {
            return Err(ImageError::Blob {
                blob: label.to_string(),
                msg: "bzip2 / xz compressed layers are not supported (gzip, zstd or none)".into(),
            });
        } else {
            Box::new(&mut buffered)
        };
        let mut inner = HashingReader::new(decoder);
        match unpack_layer(&mut inner, dest, lowers, limits, label) {
            Ok(stats) => {
                // The diff_id covers the whole uncompressed stream, padding after the tar too.
                let before = inner.count();
                match io::copy(&mut (&mut inner).take(MAX_TRAILING + 1), &mut io::sink()) {
                    Ok(_) if inner.count() - before > MAX_TRAILING => (
                        Err(ImageError::Blob {
                            blob: label.to_string(),
                            msg: format!(
                                "more than {MAX_TRAILING} bytes after the end of the tar archive"
                            ),
                        }),
                        None,
                    ),
                    Ok(_) => (Ok(stats), Some(inner.finish().0)),
                    Err(e) => (Err(io_err(e)), None),
                }
            }
            Err(e) => (Err(e), None),
        }
    };
    // The rest of the blob (a decompressor may stop before its end), for the blob digest.
    io::copy(&mut buffered, &mut io::sink()).map_err(io_err)?;
    let (blob_digest, _) = buffered.into_inner().finish();
    Ok((outcome, blob_digest, diff))
}

/// Resolves an image `User` string ("name", "uid:gid", "name:group"...) against the
/// `/etc/passwd` and `/etc/group` of unpacked layers (topmost first).
pub fn resolve_user(layer_dirs: &[PathBuf], user: &str) -> Result<user::ResolvedUser, ImageError> {
    let view = merged::MergedView::open(layer_dirs).map_err(|e| ImageError::Io {
        path: layer_dirs.first().cloned().unwrap_or_default(),
        source: e,
    })?;
    user::resolve_in(&view, user)
}
