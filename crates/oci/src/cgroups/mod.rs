//! cgroups: v1, v2 and the hybrid layout; resources, freezer, stats.
//! (Owned by the cgroups work item; see /work/oci-brief.md.)

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: {0}")]
    Invalid(String),
}
