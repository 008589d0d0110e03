//! seccomp: compiles the OCI `linux.seccomp` object into a classic BPF program and installs it.
//! (Owned by the seccomp work item; see /work/oci-brief.md.)

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Invalid(String),
}
