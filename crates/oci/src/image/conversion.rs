//! The image configuration mapped onto a runtime `config.json`, as the image spec's
//! conversion.md says: WorkingDir -> process.cwd, Env -> process.env (PATH added when the
//! image has none), Entrypoint ++ Cmd -> process.args (Docker's rule: an overriding entrypoint
//! drops the image's Cmd), User -> process.user; os/architecture/variant/os.version/
//! os.features/author/created/StopSignal/ExposedPorts as `org.opencontainers.image.*`
//! annotations, Labels verbatim and winning over those.

use super::user::ResolvedUser;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Root, Spec, User};
use std::collections::HashMap;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Not an `org.opencontainers.image.*` key: the image spec defines none for volumes
/// (conversion.md asks for mounts, which are the caller's choice of storage).
pub const VOLUMES_ANNOTATION: &str = "io.virtkit.image.volumes";

/// What the caller overrides of the image's configuration (Docker's `--entrypoint`, trailing
/// command, `-e`, `-u`, `-w`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replaces Entrypoint; the image's Cmd is then dropped unless `cmd` is also given.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces Cmd.
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries set over the image's Env.
    pub env: Vec<String>,
    /// Replaces User.
    pub user: Option<String>,
    /// Replaces WorkingDir.
    pub cwd: Option<String>,
}

/// The runtime spec the image's settings are applied to. (To be replaced by the runtime's
/// `crate::spec::default_spec()` when it exists: runc's `spec` output.)
pub fn base_spec() -> Spec {
    let mut spec = Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(false));
    }
    let mut root = Root::default();
    root.set_path("rootfs".into());
    // The overlay's upper layer is there to be written.
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_hostname(Some("virtkit".into()));
    spec
}

/// The process's argv under Docker's rule.
pub fn args(
    cfg_entrypoint: Option<&[String]>,
    cfg_cmd: Option<&[String]>,
    ov: &Overrides,
) -> Vec<String> {
    let entry: Vec<String> = match &ov.entrypoint {
        Some(e) => e.clone(),
        None => cfg_entrypoint.map(<[String]>::to_vec).unwrap_or_default(),
    };
    let cmd: Vec<String> = match (&ov.cmd, &ov.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => cfg_cmd.map(<[String]>::to_vec).unwrap_or_default(),
    };
    entry.into_iter().chain(cmd).collect()
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// Sets (or replaces) `KEY=VALUE` entries.
fn set_env(env: &mut Vec<String>, entry: &str) {
    let k = env_key(entry);
    match env.iter_mut().find(|e| env_key(e) == k) {
        Some(e) => *e = entry.to_string(),
        None => env.push(entry.to_string()),
    }
}

pub fn to_spec(
    mut spec: Spec,
    cfg: &ImageConfiguration,
    user: &ResolvedUser,
    ov: &Overrides,
) -> (Spec, Vec<String>) {
    let mut notes = Vec::new();
    let c = cfg.config().as_ref();
    let mut process = spec.process().clone().unwrap_or_default();

    let argv = args(
        c.and_then(|c| c.entrypoint().as_deref()),
        c.and_then(|c| c.cmd().as_deref()),
        ov,
    );
    if argv.is_empty() {
        notes.push(format!(
            "the image has no Entrypoint or Cmd: process.args left as {:?}",
            process.args().clone().unwrap_or_default()
        ));
    } else {
        process.set_args(Some(argv));
    }

    let mut env: Vec<String> = Vec::new();
    for e in c.and_then(|c| c.env().as_deref()).unwrap_or_default() {
        set_env(&mut env, e);
    }
    for e in &ov.env {
        set_env(&mut env, e);
    }
    if !env.iter().any(|e| env_key(e) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        let home = user.home.clone().unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    process.set_env(Some(env));

    let cwd = ov
        .cwd
        .clone()
        .or_else(|| c.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    // A relative WorkingDir (allowed by old docker) is relative to the root.
    let cwd = if cwd.starts_with('/') {
        cwd
    } else {
        format!("/{cwd}")
    };
    process.set_cwd(cwd.into());

    let mut u = User::default();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    if !user.additional_gids.is_empty() {
        u.set_additional_gids(Some(user.additional_gids.clone()));
    }
    process.set_user(u);
    spec.set_process(Some(process));

    // Annotations: implicit ones first, Labels override (conversion.md "Annotations").
    let mut ann: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    let key = |k: &str| format!("org.opencontainers.image.{k}");
    ann.insert(key("os"), cfg.os().to_string());
    ann.insert(key("architecture"), cfg.architecture().to_string());
    if let Some(v) = cfg.variant() {
        ann.insert(key("variant"), v.clone());
    }
    if let Some(v) = cfg.os_version() {
        ann.insert(key("os.version"), v.clone());
    }
    if let Some(v) = cfg.os_features() {
        ann.insert(key("os.features"), v.join(","));
    }
    if let Some(v) = cfg.author() {
        ann.insert(key("author"), v.clone());
    }
    if let Some(v) = cfg.created() {
        ann.insert(key("created"), v.clone());
    }
    if let Some(c) = c {
        if let Some(s) = c.stop_signal() {
            ann.insert(key("stopSignal"), s.clone());
        }
        if let Some(p) = c.exposed_ports() {
            let mut p = p.clone();
            p.sort();
            ann.insert(key("exposedPorts"), p.join(","));
        }
        if let Some(v) = c.volumes() {
            let mut v = v.clone();
            v.sort();
            ann.insert(VOLUMES_ANNOTATION.into(), v.join(","));
            notes.push(format!(
                "image volumes {} are recorded as the {VOLUMES_ANNOTATION} annotation, not mounted",
                v.join(", ")
            ));
        }
        if let Some(l) = c.labels() {
            for (k, v) in l {
                ann.insert(k.clone(), v.clone());
            }
        }
    }
    spec.set_annotations(Some(ann));
    (spec, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_args() {
        let e = v(&["/bin/ep"]);
        let c = v(&["a", "b"]);
        let none = Overrides::default();
        assert_eq!(args(Some(&e), Some(&c), &none), v(&["/bin/ep", "a", "b"]));
        assert_eq!(args(None, Some(&c), &none), v(&["a", "b"]));
        let o = Overrides {
            entrypoint: Some(v(&["/bin/sh"])),
            ..Default::default()
        };
        assert_eq!(args(Some(&e), Some(&c), &o), v(&["/bin/sh"]));
        let o = Overrides {
            cmd: Some(v(&["x"])),
            ..Default::default()
        };
        assert_eq!(args(Some(&e), Some(&c), &o), v(&["/bin/ep", "x"]));
    }
}
