//! cgroups: v1, v2 and the hybrid layout; resources, freezer, stats.
//! PLACEHOLDER with the agreed API, replaced by the cgroups work item (see /work/oci-brief.md).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Manager {
    pub paths: Vec<(String, PathBuf)>,
}

impl Manager {
    pub fn new(
        _cgroups_path: Option<&str>,
        id: &str,
        _systemd: bool,
        _rootless: bool,
    ) -> Result<Manager, CgroupError> {
        let p = PathBuf::from("/sys/fs/cgroup/pids").join(id);
        Ok(Manager {
            paths: vec![("pids".into(), p)],
        })
    }
    pub fn apply(
        &self,
        pid: i32,
        _r: Option<&oci_spec::runtime::LinuxResources>,
    ) -> Result<(), CgroupError> {
        for (_, p) in &self.paths {
            std::fs::create_dir_all(p).map_err(|e| CgroupError::Invalid(e.to_string()))?;
        }
        self.add_pid(pid)
    }
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, p) in &self.paths {
            std::fs::write(p.join("cgroup.procs"), pid.to_string())
                .map_err(|e| CgroupError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
    pub fn update(&self, _r: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut v = Vec::new();
        for (_, p) in &self.paths {
            if let Ok(s) = std::fs::read_to_string(p.join("cgroup.procs")) {
                v.extend(s.lines().filter_map(|l| l.parse::<i32>().ok()));
            }
        }
        Ok(v)
    }
    pub fn stats(&self) -> Result<serde_json::Value, CgroupError> {
        Ok(serde_json::json!({}))
    }
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        Ok(0)
    }
    pub fn destroy(&self) -> Result<(), CgroupError> {
        for (_, p) in &self.paths {
            let _ = std::fs::remove_dir(p);
        }
        Ok(())
    }
    pub fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        self.paths.clone()
    }
}
