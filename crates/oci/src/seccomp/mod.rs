//! seccomp: compiles the OCI `linux.seccomp` object into a classic BPF program and installs it.
//! PLACEHOLDER with the agreed API, replaced by the seccomp work item (see /work/oci-brief.md).

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Invalid(String),
}

pub struct Program {}

pub fn compile(_s: &oci_spec::runtime::LinuxSeccomp) -> Result<Program, SeccompError> {
    Err(SeccompError::Invalid("not built yet".into()))
}

impl Program {
    pub fn needs_listener(&self) -> bool {
        false
    }
    pub fn install(&self) -> Result<Option<std::os::fd::OwnedFd>, SeccompError> {
        Ok(None)
    }
}

pub fn send_listener_fd(
    _p: &std::path::Path,
    _fd: std::os::fd::BorrowedFd,
    _state: &[u8],
) -> Result<(), SeccompError> {
    Ok(())
}

pub fn supported_actions() -> &'static [&'static str] {
    &[]
}
pub fn supported_operators() -> &'static [&'static str] {
    &[]
}
pub fn supported_archs() -> &'static [&'static str] {
    &[]
}
