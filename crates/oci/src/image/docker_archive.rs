//! docker-archive (what `docker save` and `skopeo copy ... docker-archive:` write):
//! `manifest.json` lists images as {Config, RepoTags, Layers}; the legacy `repositories` file
//! maps repo -> tag -> top layer id. Older saves name blobs `<id>.json` and `<id>/layer.tar`
//! (uncompressed), docker 25+ names them `blobs/sha256/<hex>` (possibly compressed). A name
//! that carries a digest is verified against it; every layer is verified against the config's
//! diff_ids anyway.

use super::digest::Sha256Digest;
use super::manifest::{parse_docker_manifest, parse_repositories, ref_matches, DockerManifest};
use super::source::{normalize_name, Source};
use super::{BlobRef, ImageError, ImagePlan, MAX_JSON};

pub(crate) fn is_archive(src: &Source) -> bool {
    src.exists("manifest.json")
}

/// The digest a member name carries: `blobs/sha256/<hex>`, `<hex>.json`, `sha256:<hex>`.
fn digest_in_name(name: &str) -> Option<Sha256Digest> {
    let n = normalize_name(name.as_bytes())?;
    if let Some(h) = n.strip_prefix("blobs/sha256/") {
        return Sha256Digest::from_hex(h);
    }
    if let Some(h) = n.strip_suffix(".json") {
        return Sha256Digest::from_hex(h.strip_prefix("sha256:").unwrap_or(h));
    }
    None
}

fn names(m: &DockerManifest, repos: &[(String, String)]) -> Vec<String> {
    let mut v: Vec<String> = m.repo_tags.clone().unwrap_or_default();
    // Legacy: the repositories file names the top layer's directory.
    if let Some(top) = m
        .layers
        .last()
        .and_then(|l| l.rsplit_once('/'))
        .map(|p| p.0)
    {
        for (name, id) in repos {
            if id == top && !v.contains(name) {
                v.push(name.clone());
            }
        }
    }
    v
}

pub(crate) fn plan(src: &Source, reference: Option<&str>) -> Result<ImagePlan, ImageError> {
    let bytes = src.read_small("manifest.json", MAX_JSON)?;
    let entries = parse_docker_manifest(&bytes).map_err(|msg| ImageError::Blob {
        blob: src.describe("manifest.json"),
        msg,
    })?;
    let mut repos: Vec<(String, String)> = Vec::new();
    if src.exists("repositories") {
        let b = src.read_small("repositories", MAX_JSON)?;
        let r = parse_repositories(&b).map_err(|msg| ImageError::Blob {
            blob: src.describe("repositories"),
            msg,
        })?;
        for (repo, tags) in r {
            for (tag, id) in tags {
                repos.push((format!("{repo}:{tag}"), id));
            }
        }
    }
    let all_names = || {
        let v: Vec<String> = entries.iter().flat_map(|m| names(m, &repos)).collect();
        if v.is_empty() {
            "none tagged".to_string()
        } else {
            v.join(", ")
        }
    };
    let chosen: Vec<(&DockerManifest, String)> = match reference {
        Some(r) => {
            let by_id = r.strip_prefix("sha256:").unwrap_or(r);
            entries
                .iter()
                .filter_map(|m| {
                    if let Some(n) = names(m, &repos).into_iter().find(|n| ref_matches(n, r)) {
                        return Some((m, n));
                    }
                    // An image id (the config digest), whole or a prefix of 12+ digits.
                    let d = digest_in_name(&m.config)?;
                    (by_id.len() >= 12 && d.hex().starts_with(by_id)).then(|| (m, d.to_string()))
                })
                .collect()
        }
        None => entries
            .iter()
            .map(|m| {
                let n = names(m, &repos).into_iter().next();
                let n = n.or_else(|| digest_in_name(&m.config).map(|d| d.to_string()));
                (m, n.unwrap_or_else(|| m.config.clone()))
            })
            .collect(),
    };
    let (m, name) = match chosen.len() {
        1 => chosen[0].clone(),
        0 => {
            return Err(ImageError::NotFound {
                reference: reference.unwrap_or_default().to_string(),
                source_path: src.label.clone(),
                available: all_names(),
            })
        }
        _ if reference.is_some() => {
            // Same tag on two entries: refuse rather than guess.
            return Err(ImageError::Ambiguous {
                source_path: src.label.clone(),
                available: chosen
                    .iter()
                    .map(|c| c.1.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        _ => {
            return Err(ImageError::Ambiguous {
                source_path: src.label.clone(),
                available: all_names(),
            })
        }
    };
    let image = name;
    Ok(ImagePlan {
        image,
        config: BlobRef {
            name: m.config.clone(),
            digest: digest_in_name(&m.config),
            size: None,
        },
        layers: m
            .layers
            .iter()
            .map(|l| BlobRef {
                name: l.clone(),
                digest: digest_in_name(l).filter(|_| l.contains("blobs/")),
                size: None,
            })
            .collect(),
    })
}
