//! image: imports an OCI image layout or a docker-archive tar into a runtime bundle.
//! (Owned by the image work item; see /work/oci-brief.md.)

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image: {0}")]
    Invalid(String),
}
