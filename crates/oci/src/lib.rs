//! virtkit-oci: an OCI runtime for Linux (runc's model: `create` leaves an init process
//! waiting on an exec FIFO, `start` releases it), plus the pieces it stands on: cgroups
//! (v1, v2 and the hybrid layout), a seccomp compiler, and importing OCI / docker-archive
//! images into bundles. The binary (`virtkit ctr`, the `runc` link) only parses arguments and
//! prints; everything here returns typed errors and never prints or exits.

pub mod cgroups;
pub mod console;
pub mod container;
pub mod error;
pub mod exe;
pub mod hooks;
pub mod image;
pub mod init;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;
pub mod sys;

pub use container::{CreateOptions, ExecOptions, Runtime};
pub use error::{Error, Result};
