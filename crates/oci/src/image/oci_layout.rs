//! OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`): choosing the manifest.
//!
//! `index.json` lists manifests or nested indexes (multi-platform images, as `skopeo copy
//! --all` and `docker save` since 25 write them). With `--ref`, the top-level descriptor whose
//! `org.opencontainers.image.ref.name` (or containerd's `io.containerd.image.name`) matches is
//! taken; indexes below it are walked for the host's platform (linux/<GOARCH>). Every blob read
//! (nested index, manifest) is verified against its descriptor's digest and size.

use super::digest::Sha256Digest;
use super::manifest::{
    host_arch, parse_index, parse_manifest, ref_matches, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use super::source::Source;
use super::{read_verified, BlobRef, ImageError, ImagePlan, MAX_JSON};
use oci_spec::image::{Descriptor, ImageManifest};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Depth of nested indexes followed.
const MAX_DEPTH: usize = 4;
/// Descriptors looked at in all indexes together.
const MAX_DESCRIPTORS: usize = 4096;

pub(crate) fn is_layout(src: &Source) -> bool {
    src.exists("oci-layout") && src.exists("index.json")
}

fn names_of(d: &Descriptor) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(a) = d.annotations() {
        for k in [CONTAINERD_NAME, REF_NAME] {
            if let Some(n) = a.get(k) {
                v.push(n.clone());
            }
        }
    }
    v
}

pub(crate) fn blob_ref(d: &Descriptor) -> Result<BlobRef, ImageError> {
    let digest = Sha256Digest::parse(d.digest().as_ref()).map_err(ImageError::Invalid)?;
    Ok(BlobRef {
        name: format!("blobs/sha256/{}", digest.hex()),
        digest: Some(digest),
        size: Some(d.size()),
    })
}

pub(crate) fn plan(src: &Source, reference: Option<&str>) -> Result<ImagePlan, ImageError> {
    let layout = src.read_small("oci-layout", 64 << 10)?;
    let v: serde_json::Value = serde_json::from_slice(&layout).map_err(|e| ImageError::Blob {
        blob: src.describe("oci-layout"),
        msg: e.to_string(),
    })?;
    match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
        Some(ver) if ver.starts_with("1.") => {}
        other => {
            return Err(ImageError::Blob {
                blob: src.describe("oci-layout"),
                msg: format!("imageLayoutVersion {other:?}, expected 1.x"),
            })
        }
    }
    let index_bytes = src.read_small("index.json", MAX_JSON)?;
    let index = parse_index(&index_bytes).map_err(|msg| ImageError::Blob {
        blob: src.describe("index.json"),
        msg,
    })?;

    let mut candidates: Vec<&Descriptor> = index.manifests().iter().collect();
    if let Some(r) = reference {
        candidates.retain(|d| names_of(d).iter().any(|n| ref_matches(n, r)));
        if candidates.is_empty() {
            let available: Vec<String> = index.manifests().iter().flat_map(names_of).collect();
            return Err(ImageError::NotFound {
                reference: r.to_string(),
                source_path: src.label.clone(),
                available: list(&available),
            });
        }
    }
    let mut budget = MAX_DESCRIPTORS;
    let mut found: Vec<(String, Descriptor, ImageManifest)> = Vec::new();
    for d in candidates {
        if let Some((md, m)) = resolve(src, d, 0, &mut budget)? {
            let name = names_of(d)
                .into_iter()
                .next()
                .unwrap_or_else(|| md.digest().to_string());
            // The same manifest listed twice (under two names) is one image.
            if !found.iter().any(|(_, fd, _)| fd.digest() == md.digest()) {
                found.push((name, md, m));
            }
        }
    }
    let image_name = |n: String| reference.map(str::to_string).unwrap_or(n);
    match found.len() {
        0 => Err(ImageError::Invalid(format!(
            "{}: no image for linux/{} in index.json",
            src.label,
            host_arch()
        ))),
        1 => {
            let (name, _, m) = found.remove(0);
            plan_of(image_name(name), &m)
        }
        _ => Err(ImageError::Ambiguous {
            source_path: src.label.clone(),
            available: list(&found.iter().map(|f| f.0.clone()).collect::<Vec<_>>()),
        }),
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none named".into()
    } else {
        v.join(", ")
    }
}

fn plan_of(image: String, m: &ImageManifest) -> Result<ImagePlan, ImageError> {
    Ok(ImagePlan {
        image,
        config: blob_ref(m.config())?,
        layers: m.layers().iter().map(blob_ref).collect::<Result<_, _>>()?,
    })
}

fn platform_ok(d: &Descriptor) -> bool {
    match d.platform() {
        None => true,
        Some(p) => p.os().to_string() == "linux" && p.architecture().to_string() == host_arch(),
    }
}

/// Follows a descriptor down to the host platform's manifest.
fn resolve(
    src: &Source,
    d: &Descriptor,
    depth: usize,
    budget: &mut usize,
) -> Result<Option<(Descriptor, ImageManifest)>, ImageError> {
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| ImageError::Invalid(format!("{}: too many descriptors", src.label)))?;
    if !platform_ok(d) {
        return Ok(None);
    }
    let media = d.media_type().to_string();
    if media == MEDIA_OCI_INDEX || media == MEDIA_DOCKER_LIST {
        if depth >= MAX_DEPTH {
            return Err(ImageError::Invalid(format!(
                "{}: indexes nested more than {MAX_DEPTH} deep",
                src.label
            )));
        }
        let b = blob_ref(d)?;
        let bytes = read_verified(src, &b, MAX_JSON)?;
        let idx = parse_index(&bytes).map_err(|msg| ImageError::Blob {
            blob: src.describe(&b.name),
            msg,
        })?;
        for sub in idx.manifests() {
            if let Some(r) = resolve(src, sub, depth + 1, budget)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    } else if media == MEDIA_OCI_MANIFEST || media == MEDIA_DOCKER_MANIFEST {
        let b = blob_ref(d)?;
        let bytes = read_verified(src, &b, MAX_JSON)?;
        let m = parse_manifest(&bytes).map_err(|msg| ImageError::Blob {
            blob: src.describe(&b.name),
            msg,
        })?;
        Ok(Some((d.clone(), m)))
    } else {
        // Artifacts, attestations, signatures...
        Ok(None)
    }
}
