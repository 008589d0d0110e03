//! Parsers of the JSON documents of an image (all untrusted): the OCI image index, image
//! manifest and image configuration (oci-spec's types), docker-archive's `manifest.json` and
//! legacy `repositories`, and image references (`busybox`, `docker.io/library/busybox:1.36`)
//! for matching `--ref` against tags and `org.opencontainers.image.ref.name` annotations.

use super::digest::Sha256Digest;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex, String> {
    let idx: ImageIndex = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if idx.schema_version() != 2 {
        return Err(format!(
            "schemaVersion {}, expected 2",
            idx.schema_version()
        ));
    }
    Ok(idx)
}

pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, String> {
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if m.schema_version() != 2 {
        return Err(format!("schemaVersion {}, expected 2", m.schema_version()));
    }
    Ok(m)
}

/// The image configuration, with its `rootfs.diff_ids` validated.
pub fn parse_config(bytes: &[u8]) -> Result<(ImageConfiguration, Vec<Sha256Digest>), String> {
    let c: ImageConfiguration = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if c.rootfs().typ() != "layers" {
        return Err(format!(
            "rootfs.type {:?}, expected \"layers\"",
            c.rootfs().typ()
        ));
    }
    let ids = c
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Sha256Digest::parse(d).map_err(|e| format!("rootfs.diff_ids: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((c, ids))
}

/// One image of docker-archive's `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DockerManifest {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<DockerManifest>, String> {
    let v: Vec<DockerManifest> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if v.is_empty() {
        return Err("no image listed".into());
    }
    Ok(v)
}

/// Legacy `repositories`: repository -> tag -> top layer id.
pub fn parse_repositories(
    bytes: &[u8],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// A reference in its fully qualified form: `busybox` -> `docker.io/library/busybox:latest`.
pub fn normalize_ref(r: &str) -> String {
    let (name, suffix) = match r.split_once('@') {
        Some((n, d)) => (n, format!("@{d}")),
        None => {
            let slash = r.rfind('/').map_or(0, |i| i + 1);
            match r[slash..].rfind(':') {
                Some(i) => (&r[..slash + i], format!(":{}", &r[slash + i + 1..])),
                None => (r, ":latest".to_string()),
            }
        }
    };
    let (domain, rest) = match name.split_once('/') {
        Some((d, rest)) if d.contains('.') || d.contains(':') || d == "localhost" => {
            (d, rest.to_string())
        }
        _ => ("docker.io", name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let rest = if domain == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    format!("{domain}/{rest}{suffix}")
}

/// Whether an image name found in an archive (a RepoTag, a ref.name annotation, which may be a
/// bare tag as skopeo writes) designates the reference a user asked for.
pub fn ref_matches(candidate: &str, wanted: &str) -> bool {
    if candidate.is_empty() || wanted.is_empty() {
        return false;
    }
    if candidate == wanted || normalize_ref(candidate) == normalize_ref(wanted) {
        return true;
    }
    if !candidate.contains('/') && !candidate.contains(':') && !wanted.contains('@') {
        let slash = wanted.rfind('/').map_or(0, |i| i + 1);
        if let Some(i) = wanted[slash..].rfind(':') {
            return &wanted[slash + i + 1..] == candidate;
        }
    }
    false
}

/// The GOARCH name of the architecture we run on.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(normalize_ref("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize_ref("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize_ref("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_ref("localhost:5000/app:v1"),
            "localhost:5000/app:v1"
        );
        assert_eq!(
            normalize_ref("quay.io/a/b@sha256:00"),
            "quay.io/a/b@sha256:00"
        );
        assert!(ref_matches("busybox:latest", "docker.io/library/busybox"));
        assert!(ref_matches("v1", "myimage:v1"));
        assert!(!ref_matches("v2", "myimage:v1"));
        assert!(!ref_matches("other:latest", "busybox"));
    }
}
