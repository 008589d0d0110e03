//! The OCI runtime (`runc` personality of the binary) on real containers: a busybox-static
//! rootfs (scripts/busybox-rootfs.sh), real namespaces, cgroups, mounts, hooks and terminals
//! on this host. Every test has its own state root (--root) and bundle under a fresh temp
//! dir, and container ids unique to this process; whatever a test leaves behind is deleted
//! with `delete -f` when its `Lab` drops, also when an assertion failed.
//!
//! Where the runtime spec leaves behaviour open (state JSON, list output, exit codes, error
//! ordering), the same steps are run on Debian's runc (/usr/sbin/runc) and compared.
//!
//! Tests that need something this host lacks print "skipped: why" and return.

use serde_json::{json, Value};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEBIAN_RUNC: &str = "/usr/sbin/runc";
/// How long any runtime command may take before the test calls it hung.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Harness

/// Why this host cannot run the suite (None: it can).
fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (containers need CAP_SYS_ADMIN)");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox missing (apt-get install busybox-static)");
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        return Some("no /sys/fs/cgroup");
    }
    None
}

macro_rules! need_host {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn debian_runc() -> bool {
    Path::new(DEBIAN_RUNC).exists()
}

/// The binary under the name `runc` (it picks its personality from argv[0]).
fn runc_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ctr-bin");
        fs::create_dir_all(&dir).unwrap();
        let link = dir.join("runc");
        let tmp = dir.join(format!("runc.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_virtkit"), &tmp).unwrap();
        fs::rename(&tmp, &link).unwrap();
        link
    })
}

/// The busybox rootfs every bundle copies (built once per run by the project's script).
fn rootfs_template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs.sh");
        let o = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "busybox-rootfs.sh: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        dir
    })
}

/// The default config, as our `spec` writes it, parsed once.
fn default_config() -> &'static Value {
    static CFG: OnceLock<Value> = OnceLock::new();
    CFG.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let o = Command::new(runc_bin())
            .args(["spec", "--bundle"])
            .arg(d.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&fs::read(d.path().join("config.json")).unwrap()).unwrap()
    })
}

#[derive(Debug)]
struct Out {
    cmdline: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            self.cmdline, self.code, self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    fn fails(self) -> Out {
        assert_ne!(
            self.code, 0,
            "`{}` should have failed:\nstdout: {}\nstderr: {}",
            self.cmdline, self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
    /// The error message without runc's logrus decoration (`time=... level=error msg="..."`).
    fn msg(&self) -> String {
        let mut out = Vec::new();
        for line in self.stderr.lines() {
            match line.find("msg=\"") {
                Some(i) => {
                    let m = &line[i + 5..];
                    let end = m.rfind('"').unwrap_or(m.len());
                    out.push(
                        m[..end]
                            .replace("\\n", "\n")
                            .replace("\\\"", "\"")
                            .trim()
                            .to_string(),
                    );
                }
                None => out.push(line.trim().to_string()),
            }
        }
        out.join("\n").trim().to_string()
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Runs `cmd` with stdout/stderr going to files in `dir` (a detached container keeps the
/// runtime's stdio open, so pipes would never reach EOF) and waits for the runtime only.
fn run_cmd(mut cmd: Command, dir: &Path) -> Out {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let so = dir.join(format!(".stdout.{n}"));
    let se = dir.join(format!(".stderr.{n}"));
    let cmdline = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&so).unwrap())
        .stderr(fs::File::create(&se).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmdline}: {e}"));
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{cmdline}` hung (killed after {CMD_TIMEOUT:?})");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let out = Out {
        cmdline,
        code,
        stdout: fs::read_to_string(&so).unwrap_or_default(),
        stderr: fs::read_to_string(&se).unwrap_or_default(),
    };
    let _ = fs::remove_file(&so);
    let _ = fs::remove_file(&se);
    out
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// Which runtime a command goes to.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Rt {
    Ours,
    Debian,
}

/// One test's world: a temp dir with a state root per runtime and bundles.
struct Lab {
    tmp: tempfile::TempDir,
    name: String,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("vkt-ctr-{name}-"))
            .tempdir()
            .unwrap();
        // Reachable by a user namespace's root (a host uid that is "other" here).
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Lab {
            tmp,
            name: name.to_string(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn root(&self, rt: Rt) -> PathBuf {
        self.path(match rt {
            Rt::Ours => "state",
            Rt::Debian => "state-runc",
        })
    }

    /// A container id nobody else uses (other tests, other runs of this suite).
    fn id(&self, s: &str) -> String {
        format!("vkt{}-{}-{s}", std::process::id(), self.name)
    }

    /// A bundle `name` with a copy of the busybox rootfs and the default config, changed to
    /// run `args` without a terminal on a writable root, then edited by `edit`.
    fn bundle(&self, name: &str, args: Value, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let b = self.path(name);
        fs::create_dir_all(&b).unwrap();
        let o = Command::new("cp")
            .arg("-a")
            .arg(rootfs_template())
            .arg(b.join("rootfs"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut cfg = default_config().clone();
        cfg["process"]["terminal"] = json!(false);
        cfg["process"]["args"] = args;
        cfg["root"]["readonly"] = json!(false);
        edit(&mut cfg);
        self.write_config(&b, &cfg);
        b
    }

    fn write_config(&self, bundle: &Path, cfg: &Value) {
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(cfg).unwrap(),
        )
        .unwrap();
    }

    fn config(&self, bundle: &Path) -> Value {
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap()
    }

    fn cmd(&self, rt: Rt, args: &[&str]) -> Command {
        let mut c = Command::new(match rt {
            Rt::Ours => runc_bin(),
            Rt::Debian => Path::new(DEBIAN_RUNC),
        });
        c.arg("--root").arg(self.root(rt)).args(args);
        c.current_dir(self.tmp.path());
        c
    }

    fn rt(&self, rt: Rt, args: &[&str]) -> Out {
        run_cmd(self.cmd(rt, args), self.tmp.path())
    }

    /// Our runtime.
    fn vk(&self, args: &[&str]) -> Out {
        self.rt(Rt::Ours, args)
    }

    /// `run` in the foreground: the container's output and exit code.
    fn run(&self, bundle: &Path, id: &str) -> Out {
        self.vk(&["run", "--bundle", bundle.to_str().unwrap(), id])
    }

    fn state(&self, rt: Rt, id: &str) -> Value {
        let o = self.rt(rt, &["state", id]).ok();
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
    }

    fn status(&self, rt: Rt, id: &str) -> String {
        self.state(rt, id)["status"].as_str().unwrap().to_string()
    }

    fn pid(&self, id: &str) -> i32 {
        self.state(Rt::Ours, id)["pid"].as_i64().unwrap() as i32
    }

    #[track_caller]
    fn wait_status(&self, rt: Rt, id: &str, want: &str) {
        let mut last = String::new();
        let ok = wait_for(Duration::from_secs(10), || {
            last = self.status(rt, id);
            last == want
        });
        assert!(ok, "{id} stayed {last}, expected {want}");
    }

    /// `run -d` of a bundle; returns the init's pid.
    fn run_detached(&self, bundle: &Path, id: &str) -> i32 {
        self.vk(&["run", "-d", "--bundle", bundle.to_str().unwrap(), id])
            .ok();
        self.pid(id)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for rt in [Rt::Ours, Rt::Debian] {
            let root = self.root(rt);
            let Ok(rd) = fs::read_dir(&root) else {
                continue;
            };
            for e in rd.flatten() {
                if !e.path().is_dir() {
                    continue;
                }
                let id = e.file_name().to_string_lossy().into_owned();
                if rt == Rt::Debian && !debian_runc() {
                    continue;
                }
                let mut c = self.cmd(rt, &["delete", "-f", &id]);
                c.stdout(Stdio::null()).stderr(Stdio::null());
                let _ = c.status();
            }
        }
    }
}

/// The host's view of a process: /proc/PID/status fields.
fn proc_status(pid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
}

/// utime (clock ticks in user mode) from /proc/PID/stat.
fn utime(pid: i32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    after.split(' ').nth(11).unwrap().parse().unwrap()
}

/// The host directory of `pid`'s cgroup in a v1 controller hierarchy.
fn cgroup_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for l in s.lines() {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.split(',').any(|c| c == controller) {
            let base = Path::new("/sys/fs/cgroup").join(ctrls);
            return Some(base.join(path.trim_start_matches('/')));
        }
    }
    None
}

fn read_trim(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

/// The capability mask of a list of names ("CAP_KILL"), as /proc/PID/status prints it.
fn cap_hex(names: &[&str]) -> String {
    const ORDER: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
    ];
    let mut m = 0u64;
    for n in names {
        let i = ORDER
            .iter()
            .position(|c| *c == n.trim_start_matches("CAP_"))
            .unwrap();
        m |= 1 << i;
    }
    format!("{m:016x}")
}

// ---------------------------------------------------------------------------------------
// Commands

#[test]
fn spec_is_runc_template_byte_for_byte() {
    need_host!();
    let lab = Lab::new("spec");
    for rootless in [false, true] {
        let ours = lab.path(&format!("ours-{rootless}"));
        let theirs = lab.path(&format!("theirs-{rootless}"));
        fs::create_dir_all(&ours).unwrap();
        fs::create_dir_all(&theirs).unwrap();
        let mut args = vec!["spec", "--bundle"];
        let (o, t) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
        args.push(o);
        if rootless {
            args.push("--rootless");
        }
        lab.vk(&args).ok();
        let text = fs::read_to_string(ours.join("config.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ociVersion"], "1.0.2-dev");
        if rootless {
            assert!(v["linux"]["uidMappings"].is_array(), "{text}");
        }
        // A second spec does not overwrite the first.
        let again = lab.vk(&args).fails();
        assert!(again.msg().contains("exists"), "{}", again.stderr);
        if !debian_runc() {
            eprintln!("skipped: comparison with Debian's runc (no {DEBIAN_RUNC})");
            continue;
        }
        args[2] = t;
        lab.rt(Rt::Debian, &args).ok();
        let want = fs::read(theirs.join("config.json")).unwrap();
        assert!(
            text.as_bytes() == want,
            "spec{} differs from runc's:\n{}\n---\n{}",
            if rootless { " --rootless" } else { "" },
            text,
            String::from_utf8_lossy(&want)
        );
        assert_eq!(lab.rt(Rt::Debian, &args).fails().code, again.code);
    }
}

/// One lifecycle, step by step: (step, exit code, status afterwards).
fn lifecycle(lab: &Lab, rt: Rt, bundle: &Path, id: &str) -> (Vec<(String, i32, String)>, Value) {
    let b = bundle.to_str().unwrap();
    let mut steps = Vec::new();
    let status = |lab: &Lab| -> String {
        let o = lab.rt(rt, &["state", id]);
        if o.code != 0 {
            return format!("(state exit {})", o.code);
        }
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        format!(
            "{} pid>0={}",
            v["status"].as_str().unwrap(),
            v["pid"].as_i64().unwrap() > 0
        )
    };
    let mut step = |lab: &Lab, name: &str, args: &[&str]| {
        let o = lab.rt(rt, args);
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
        steps.push((name.to_string(), o.code, status(lab)));
        o
    };
    step(lab, "state missing", &["state", id]);
    step(lab, "kill missing", &["kill", id, "KILL"]);
    step(lab, "delete missing", &["delete", id]);
    step(lab, "start missing", &["start", id]);
    step(lab, "create", &["create", "--bundle", b, id]);
    let created = lab.state(rt, id);
    step(lab, "create duplicate", &["create", "--bundle", b, id]);
    step(lab, "resume created", &["resume", id]);
    step(lab, "start", &["start", id]);
    step(lab, "start running", &["start", id]);
    let del = step(lab, "delete running", &["delete", id]);
    let del_msg = del.msg().replace(id, "ID");
    step(lab, "resume running", &["resume", id]);
    step(lab, "pause", &["pause", id]);
    step(lab, "pause paused", &["pause", id]);
    step(lab, "exec paused", &["exec", id, "true"]);
    step(lab, "resume", &["resume", id]);
    step(lab, "exec", &["exec", id, "true"]);
    step(lab, "exec exit 3", &["exec", id, "sh", "-c", "exit 3"]);
    step(lab, "kill bad signal", &["kill", id, "NOSUCHSIG"]);
    step(lab, "kill KILL", &["kill", id, "KILL"]);
    assert!(
        wait_for(Duration::from_secs(10), || lab.status(rt, id) == "stopped"),
        "{rt:?}: {id} did not stop"
    );
    step(lab, "after kill", &["state", id]);
    step(lab, "kill stopped", &["kill", id, "KILL"]);
    step(lab, "start stopped", &["start", id]);
    step(lab, "pause stopped", &["pause", id]);
    step(lab, "exec stopped", &["exec", id, "true"]);
    step(lab, "delete", &["delete", id]);
    step(lab, "state deleted", &["state", id]);
    (steps, json!({"created": created, "delete_msg": del_msg}))
}

#[test]
fn lifecycle_matches_debian_runc() {
    need_host!();
    let lab = Lab::new("life");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |_| {});
    let (ours, ov) = lifecycle(&lab, Rt::Ours, &b, &lab.id("o"));
    // Sanity of our own sequence, whatever runc does.
    let get = |name: &str| ours.iter().find(|s| s.0 == name).unwrap().clone();
    assert_eq!(get("create").1, 0);
    assert_eq!(get("create").2, "created pid>0=true");
    assert_eq!(get("start").2, "running pid>0=true");
    assert_eq!(get("pause").2, "paused pid>0=true");
    assert_eq!(get("resume").2, "running pid>0=true");
    assert_eq!(get("exec exit 3").1, 3);
    assert_eq!(
        get("after kill"),
        ("after kill".into(), 0, "stopped pid>0=false".into())
    );
    assert_eq!(get("state deleted").2, "(state exit 1)");
    assert!(get("delete running").1 != 0);
    let state = &ov["created"];
    assert_eq!(state["id"], lab.id("o"));
    assert_eq!(state["bundle"], b.to_str().unwrap());
    assert_eq!(state["rootfs"], b.join("rootfs").to_str().unwrap());
    let created = state["created"].as_str().unwrap();
    assert!(
        created.len() == 30 && created.as_bytes()[10] == b'T' && created.ends_with('Z'),
        "created {created:?} is not RFC 3339 with nanoseconds"
    );
    if !debian_runc() {
        eprintln!("skipped: comparison with Debian's runc (no {DEBIAN_RUNC})");
        return;
    }
    let b2 = lab.bundle("b2", json!(["sleep", "1000"]), |_| {});
    let (theirs, tv) = lifecycle(&lab, Rt::Debian, &b2, &lab.id("d"));
    let mut diffs = Vec::new();
    for (o, t) in ours.iter().zip(&theirs) {
        if o != t {
            diffs.push(format!("ours {o:?}\nrunc {t:?}"));
        }
    }
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert_eq!(ov["delete_msg"], tv["delete_msg"]);
    // The same state fields, the same constant values.
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ov["created"]), keys(&tv["created"]));
    for k in ["ociVersion", "owner", "status"] {
        assert_eq!(ov["created"][k], tv["created"][k], "{k}");
    }
}

#[test]
fn list_table_json_quiet_like_runc() {
    need_host!();
    let lab = Lab::new("list");
    let mut rts = vec![Rt::Ours];
    if debian_runc() {
        rts.push(Rt::Debian);
    } else {
        eprintln!("skipped: comparison with Debian's runc (no {DEBIAN_RUNC})");
    }
    let mut tables = Vec::new();
    for rt in rts {
        // Empty: runc prints the header alone, and "null" as JSON.
        let empty = lab.rt(rt, &["list"]).ok();
        assert_eq!(
            empty.stdout,
            "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
        );
        assert_eq!(
            lab.rt(rt, &["list", "-f", "json"]).ok().stdout.trim(),
            "null"
        );
        // Names of one length: the table's column widths follow the bundle paths.
        let b = lab.bundle(
            if rt == Rt::Ours { "b-o" } else { "b-d" },
            json!(["sleep", "1000"]),
            |_| {},
        );
        let ids = [lab.id("a"), lab.id("bb")];
        for id in &ids {
            lab.rt(rt, &["create", "--bundle", b.to_str().unwrap(), id])
                .ok();
        }
        lab.rt(rt, &["start", &ids[1]]).ok();
        let q = lab.rt(rt, &["list", "-q"]).ok();
        assert_eq!(q.stdout, format!("{}\n{}\n", ids[0], ids[1]));
        let j: Value =
            serde_json::from_str(&lab.rt(rt, &["list", "--format", "json"]).ok().stdout).unwrap();
        let arr = j.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["id"], ids[0].as_str());
        assert_eq!(arr[0]["status"], "created");
        assert_eq!(arr[1]["status"], "running");
        assert_eq!(arr[1]["owner"], "root");
        let t = lab.rt(rt, &["list"]).ok().stdout;
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        for (l, id) in lines[1..].iter().zip(&ids) {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "{l}");
            assert_eq!(f[0], id);
            assert_eq!(f[3], b.to_str().unwrap());
            assert_eq!(f[5], "root");
        }
        // Column layout with the variable parts blanked.
        let mut keys: Vec<Vec<String>> = arr
            .iter()
            .map(|c| c.as_object().unwrap().keys().cloned().collect())
            .collect();
        keys.iter_mut().for_each(|k| k.sort());
        let shape: Vec<String> = lines
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .enumerate()
                    .map(|(i, w)| if i == 0 || i == 2 || i == 5 { w } else { "_" })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        tables.push((shape, keys, lines[0].to_string()));
        for id in &ids {
            lab.rt(rt, &["delete", "-f", id]).ok();
        }
    }
    if tables.len() == 2 {
        assert_eq!(tables[0], tables[1]);
    }
}

#[test]
fn run_propagates_exit_codes_and_detaches() {
    need_host!();
    let lab = Lab::new("run");
    let mut cases = vec![
        (sh("echo out; echo err >&2; exit 42"), 42),
        (sh("kill -9 $$"), 137),
        (json!(["true"]), 0),
        (json!(["/no/such/program"]), -1),
    ];
    for (i, (args, want)) in cases.drain(..).enumerate() {
        let b = lab.bundle(&format!("b{i}"), args.clone(), |c| {
            // Not PID 1 of a pid namespace: `kill -9 $$` must be able to kill the shell.
            if i == 1 {
                let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "pid");
            }
        });
        let o = lab.run(&b, &lab.id(&format!("fg{i}")));
        if want >= 0 {
            assert_eq!(o.code, want, "{args}: {o:?}");
        } else {
            assert_ne!(o.code, 0, "{o:?}");
            assert!(o.stderr.contains("/no/such/program"), "{}", o.stderr);
        }
        if i == 0 {
            assert_eq!(o.stdout, "out\n");
            assert!(o.stderr.contains("err"));
        }
        // Foreground run deletes the container.
        assert_eq!(lab.vk(&["list", "-q"]).ok().stdout, "");
        if debian_runc() && want >= 0 {
            let t = lab.rt(
                Rt::Debian,
                &[
                    "run",
                    "--bundle",
                    b.to_str().unwrap(),
                    &lab.id(&format!("d{i}")),
                ],
            );
            assert_eq!(o.code, t.code, "{args}: ours {o:?}\nrunc {t:?}");
        }
    }
    // -d: back at once, the container runs on.
    let b = lab.bundle("bd", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("det");
    let t0 = Instant::now();
    let pid = lab.run_detached(&b, &id);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(lab.status(Rt::Ours, &id), "running");
    assert_eq!(proc_status(pid, "Name").as_deref(), Some("sleep"));
    // A second run with the same id is refused.
    let dup = lab
        .vk(&["run", "-d", "--bundle", b.to_str().unwrap(), &id])
        .fails();
    assert!(dup.msg().contains("exists"), "{}", dup.stderr);
    lab.vk(&["kill", &id, "9"]).ok();
    lab.wait_status(Rt::Ours, &id, "stopped");
    lab.vk(&["delete", &id]).ok();
}

#[test]
fn kill_by_name_number_and_all() {
    need_host!();
    let lab = Lab::new("kill");
    // The init records the signals it gets (as PID 1 it only sees the ones it traps).
    let b = lab.bundle(
        "b",
        sh(
            "trap 'echo USR1 >> /tmp/sigs' USR1; trap 'echo USR2 >> /tmp/sigs' USR2; \
            trap 'echo HUP >> /tmp/sigs' HUP; \
            sleep 1000 & sleep 1000 & while :; do sleep 0.05; done",
        ),
        |_| {},
    );
    let id = lab.id("k");
    lab.run_detached(&b, &id);
    let sigs = b.join("rootfs/tmp/sigs");
    let mut want = String::new();
    for (arg, name) in [
        ("USR1", "USR1"),
        ("SIGUSR2", "USR2"),
        ("1", "HUP"),
        ("sigusr1", "USR1"),
    ] {
        lab.vk(&["kill", &id, arg]).ok();
        want.push_str(name);
        want.push('\n');
        assert!(
            wait_for(Duration::from_secs(10), || fs::read_to_string(&sigs)
                .is_ok_and(|s| s == want)),
            "after kill {arg}: {:?}",
            fs::read_to_string(&sigs)
        );
        // busybox sh keeps one pending signal while a trap runs: let the trap finish
        // before the next signal (one was lost under load in CI without this).
        std::thread::sleep(Duration::from_millis(300));
    }
    let bad = lab.vk(&["kill", &id, "SIGNOPE"]).fails();
    assert!(bad.msg().contains("unknown signal"), "{}", bad.stderr);
    let bad = lab.vk(&["kill", &id, "99"]).fails();
    assert!(bad.msg().contains("signal"), "{}", bad.stderr);
    // --all reaches every process of the container, not only the init.
    let pids: Vec<i32> =
        serde_json::from_str(&lab.vk(&["ps", "-f", "json", &id]).ok().stdout).unwrap();
    assert!(pids.len() >= 3, "{pids:?}");
    lab.vk(&["kill", "--all", &id, "KILL"]).ok();
    assert!(wait_for(Duration::from_secs(10), || pids
        .iter()
        .all(|p| !Path::new(&format!("/proc/{p}")).exists()
            || proc_status(*p, "State")
                .is_some_and(|s| s.starts_with('Z')))));
    lab.wait_status(Rt::Ours, &id, "stopped");
    lab.vk(&["delete", &id]).ok();
}

#[test]
fn delete_running_needs_force() {
    need_host!();
    let lab = Lab::new("del");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("x");
    let pid = lab.run_detached(&b, &id);
    let o = lab.vk(&["delete", &id]).fails();
    assert_eq!(
        o.msg(),
        format!("cannot delete container {id} that is not stopped: running")
    );
    assert_eq!(o.code, 1);
    let cg = cgroup_dir(pid, "pids").unwrap();
    assert!(cg.exists());
    lab.vk(&["delete", "-f", &id]).ok();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || proc_status(pid, "State").is_some_and(|s| s.starts_with('Z'))
    );
    assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    assert!(!lab.root(Rt::Ours).join(&id).exists());
    // A created (never started) container is deleted without -f, like runc.
    lab.vk(&["create", "--bundle", b.to_str().unwrap(), &id])
        .ok();
    let pid = lab.pid(&id);
    lab.vk(&["delete", &id]).ok();
    assert!(wait_for(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{pid}"
    ))
    .exists()));
}

#[test]
fn exec_args_process_json_cwd_env_user_cap_detach() {
    need_host!();
    let lab = Lab::new("exec");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("e");
    let init = lab.run_detached(&b, &id);
    let ex = |args: &[&str]| {
        let mut a = vec!["exec"];
        a.extend_from_slice(args);
        lab.vk(&a)
    };
    assert_eq!(ex(&[&id, "echo", "a", "b c"]).ok().stdout, "a b c\n");
    assert_eq!(ex(&[&id, "sh", "-c", "exit 7"]).code, 7);
    // In the container's namespaces: PID 1 is the init, the hostname is the config's.
    let o = ex(&[&id, "sh", "-c", "cat /proc/1/comm; hostname; echo $$"]).ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "sleep");
    assert_eq!(l[1], "runc");
    assert_ne!(l[2], "1");
    assert_eq!(ex(&["--cwd", "/etc", &id, "pwd"]).ok().stdout, "/etc\n");
    let o = ex(&[
        "-e",
        "FOO=bar",
        "--env",
        "PATH=/bin",
        &id,
        "sh",
        "-c",
        "echo $FOO $PATH",
    ])
    .ok();
    assert_eq!(o.stdout, "bar /bin\n");
    let o = ex(&["-u", "1000:1001", &id, "sh", "-c", "id -u; id -g"]).ok();
    assert_eq!(o.stdout, "1000\n1001\n");
    let o = ex(&["--user", "65534", &id, "id", "-u"]).ok();
    assert_eq!(o.stdout, "65534\n");
    // --cap adds to the configured sets.
    let o = ex(&[
        "--cap",
        "CAP_SYS_ADMIN",
        &id,
        "grep",
        "CapEff",
        "/proc/self/status",
    ])
    .ok();
    let eff = u64::from_str_radix(o.stdout.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert!(eff & (1 << 21) != 0, "{}", o.stdout);
    let o = ex(&[&id, "grep", "CapEff", "/proc/self/status"]).ok();
    let eff = u64::from_str_radix(o.stdout.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "{}", o.stdout);
    // -p process.json: the whole process from a file.
    let pj = lab.path("process.json");
    fs::write(
        &pj,
        serde_json::to_vec(&json!({
            "terminal": false,
            "user": {"uid": 1, "gid": 2},
            "args": ["sh", "-c", "echo fromjson $X; pwd; id -u; id -g"],
            "env": ["PATH=/bin:/usr/bin", "X=42"],
            "cwd": "/tmp"
        }))
        .unwrap(),
    )
    .unwrap();
    let o = ex(&["-p", pj.to_str().unwrap(), &id]).ok();
    assert_eq!(o.stdout, "fromjson 42\n/tmp\n1\n2\n");
    // -d with --pid-file: back at once, the process runs on in the container.
    let pf = lab.path("exec.pid");
    ex(&[
        "-d",
        "--pid-file",
        pf.to_str().unwrap(),
        &id,
        "sleep",
        "500",
    ])
    .ok();
    let pid: i32 = read_trim(&pf).parse().unwrap();
    assert_eq!(proc_status(pid, "Name").as_deref(), Some("sleep"));
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        fs::read_link(format!("/proc/{init}/ns/pid")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap(),
        fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap()
    );
    let pids: Vec<i32> =
        serde_json::from_str(&lab.vk(&["ps", "-f", "json", &id]).ok().stdout).unwrap();
    assert!(pids.contains(&pid) && pids.contains(&init), "{pids:?}");
    // A program that is not there.
    let o = ex(&[&id, "no-such-program"]).fails();
    assert!(o.stderr.contains("no-such-program"), "{}", o.stderr);
    lab.vk(&["delete", "-f", &id]).ok();
}

#[test]
fn ps_table_and_json() {
    need_host!();
    let lab = Lab::new("ps");
    let b = lab.bundle("b", sh("sleep 1000 & exec sleep 999"), |_| {});
    let id = lab.id("p");
    let init = lab.run_detached(&b, &id);
    let mut pids = Vec::new();
    assert!(wait_for(Duration::from_secs(5), || {
        pids = serde_json::from_str::<Vec<i32>>(&lab.vk(&["ps", "-f", "json", &id]).ok().stdout)
            .unwrap();
        pids.len() == 2
    }));
    assert!(pids.contains(&init));
    let t = lab.vk(&["ps", &id]).ok().stdout;
    let mut lines = t.lines();
    let header = lines.next().unwrap();
    let col = header.split_whitespace().position(|h| h == "PID").unwrap();
    let mut shown: Vec<i32> = lines
        .map(|l| l.split_whitespace().nth(col).unwrap().parse().unwrap())
        .collect();
    shown.sort();
    pids.sort();
    assert_eq!(shown, pids, "{t}");
    // ps options after the id go to ps.
    let t = lab.vk(&["ps", &id, "-o", "pid,comm"]).ok().stdout;
    assert!(
        t.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["PID", "COMMAND"]),
        "{t}"
    );
    assert!(t.contains(&format!("{init} sleep")), "{t}");
    lab.vk(&["delete", "-f", &id]).ok();
}

#[test]
fn pause_freezes_and_resume_thaws() {
    need_host!();
    let lab = Lab::new("pause");
    let b = lab.bundle("b", sh("while :; do :; done"), |_| {});
    let id = lab.id("f");
    let pid = lab.run_detached(&b, &id);
    let u0 = utime(pid);
    assert!(
        wait_for(Duration::from_secs(5), || utime(pid) > u0),
        "the busy loop does not run"
    );
    lab.vk(&["pause", &id]).ok();
    assert_eq!(lab.status(Rt::Ours, &id), "paused");
    let frozen = cgroup_dir(pid, "freezer").unwrap();
    assert_eq!(read_trim(frozen.join("freezer.state")), "FROZEN");
    let u1 = utime(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(utime(pid), u1, "a frozen container ran");
    let l = lab.vk(&["list"]).ok().stdout;
    assert!(
        l.lines()
            .any(|l| l.starts_with(&id) && l.contains("paused")),
        "{l}"
    );
    lab.vk(&["resume", &id]).ok();
    assert_eq!(lab.status(Rt::Ours, &id), "running");
    assert!(
        wait_for(Duration::from_secs(5), || utime(pid) > u1),
        "the container did not run again after resume"
    );
    // A paused container can be killed and deleted.
    lab.vk(&["pause", &id]).ok();
    lab.vk(&["delete", "-f", &id]).ok();
    assert!(wait_for(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{pid}"
    ))
    .exists()));
}

#[test]
fn events_stats_is_a_json_line() {
    need_host!();
    let lab = Lab::new("events");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
    });
    let id = lab.id("ev");
    lab.run_detached(&b, &id);
    let o = lab.vk(&["events", "--stats", &id]).ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", o.stdout);
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], id.as_str());
    let data = &v["data"];
    assert!(data["pids"]["current"].as_u64().unwrap() >= 1, "{data}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{data}"
    );
    assert_eq!(
        data["memory"]["usage"]["limit"].as_u64(),
        Some(64 << 20),
        "{data}"
    );
    if debian_runc() {
        let b2 = lab.bundle("b2", json!(["sleep", "1000"]), |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
        });
        let id2 = lab.id("evd");
        lab.rt(
            Rt::Debian,
            &["run", "-d", "--bundle", b2.to_str().unwrap(), &id2],
        )
        .ok();
        let t = lab.rt(Rt::Debian, &["events", "--stats", &id2]).ok();
        let tv: Value = serde_json::from_str(t.stdout.lines().next().unwrap()).unwrap();
        let mut ours: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut theirs: Vec<&String> = tv.as_object().unwrap().keys().collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
        for k in ["cpu", "memory", "pids"] {
            assert!(data.get(k).is_some() == tv["data"].get(k).is_some(), "{k}");
        }
    }
    // Stopped: --stats has nothing to say.
    lab.vk(&["kill", &id, "KILL"]).ok();
    lab.wait_status(Rt::Ours, &id, "stopped");
    lab.vk(&["events", "--stats", &id]).fails();
}

#[test]
fn update_memory_pids_and_resources_file() {
    need_host!();
    let lab = Lab::new("update");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 128 << 20});
        c["linux"]["resources"]["pids"] = json!({"limit": 100});
    });
    let id = lab.id("u");
    let pid = lab.run_detached(&b, &id);
    let mem = cgroup_dir(pid, "memory").unwrap();
    let pids = cgroup_dir(pid, "pids").unwrap();
    assert_eq!(
        read_trim(mem.join("memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    assert_eq!(read_trim(pids.join("pids.max")), "100");
    lab.vk(&["update", "--memory", "64M", "--pids-limit", "50", &id])
        .ok();
    assert_eq!(
        read_trim(mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read_trim(pids.join("pids.max")), "50");
    let r = lab.path("resources.json");
    fs::write(
        &r,
        serde_json::to_vec(&json!({"memory": {"limit": 96 << 20}, "pids": {"limit": 77}})).unwrap(),
    )
    .unwrap();
    lab.vk(&["update", "-r", r.to_str().unwrap(), &id]).ok();
    assert_eq!(
        read_trim(mem.join("memory.limit_in_bytes")),
        (96u64 << 20).to_string()
    );
    assert_eq!(read_trim(pids.join("pids.max")), "77");
    // Only what is given changes.
    lab.vk(&["update", "--pids-limit", "33", &id]).ok();
    assert_eq!(
        read_trim(mem.join("memory.limit_in_bytes")),
        (96u64 << 20).to_string()
    );
    assert_eq!(read_trim(pids.join("pids.max")), "33");
    lab.vk(&["update", "--memory", "lots", &id]).fails();
    lab.vk(&["update", "--pids-limit", "5", "nosuch"]).fails();
    lab.vk(&["delete", "-f", &id]).ok();
    lab.vk(&["update", "--pids-limit", "5", &id]).fails();
}

#[test]
fn features_and_checkpoint() {
    need_host!();
    let lab = Lab::new("feat");
    let o = lab.vk(&["features"]).ok();
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for n in [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ] {
        assert!(ns.contains(&n), "{n} missing from {ns:?}");
    }
    assert_eq!(v["hooks"].as_array().unwrap().len(), 6);
    if debian_runc() {
        let t: Value =
            serde_json::from_str(&lab.rt(Rt::Debian, &["features"]).ok().stdout).unwrap();
        for k in t.as_object().unwrap().keys() {
            assert!(v.get(k).is_some(), "features lacks runc's {k}");
        }
    }
    let b = lab.bundle("b", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("c");
    lab.run_detached(&b, &id);
    for cmd in ["checkpoint", "restore"] {
        let o = lab.vk(&[cmd, &id]);
        assert_eq!(o.code, 1, "{o:?}");
        assert!(o.msg().contains("not supported"), "{}", o.stderr);
    }
    assert_eq!(lab.status(Rt::Ours, &id), "running");
    lab.vk(&["delete", "-f", &id]).ok();
}

// ---------------------------------------------------------------------------------------
// Namespaces

/// `readlink /proc/self/ns/*` of this (host) process.
fn host_ns(name: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{name}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

const NS_NAMES: &[&str] = &["pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time"];

fn ns_script() -> String {
    let mut s = String::new();
    for n in NS_NAMES {
        s.push_str(&format!("echo ns.{n}=$(readlink /proc/self/ns/{n}); "));
    }
    s
}

/// "name" -> value of the `ns.name=value` lines.
fn ns_of(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("ns."))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn new_namespaces_pid_net_ipc_uts_mount_cgroup() {
    need_host!();
    let lab = Lab::new("ns");
    let b = lab.bundle(
        "b",
        sh(&format!(
            "echo pid=$$; echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '); \
             echo host=$(hostname); echo domain=$(cat /proc/sys/kernel/domainname); \
             echo cgroups=$(cut -d: -f3 /proc/self/cgroup | sort -u | tr '\\n' ' '); \
             echo shm=$(ipcs -m 2>/dev/null | grep -c 0x); {}",
            ns_script()
        )),
        |c| {
            c["hostname"] = json!("vkt-host");
            c["domainname"] = json!("vkt.example");
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "cgroup"}));
        },
    );
    let o = lab.run(&b, &lab.id("n")).ok();
    let line = |k: &str| {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {}", o.stdout))
            .to_string()
    };
    assert_eq!(line("pid"), "1");
    assert_eq!(line("ifaces"), "lo");
    assert_eq!(line("host"), "vkt-host");
    assert_eq!(line("domain"), "vkt.example");
    // In its own cgroup namespace the container's cgroups are the roots.
    assert_eq!(line("cgroups").trim(), "/");
    let ns = ns_of(&o.stdout);
    for n in ["pid", "net", "ipc", "uts", "mnt", "cgroup"] {
        assert_ne!(ns[n], host_ns(n), "{n} namespace not new");
    }
    for n in ["user", "time"] {
        assert_eq!(ns[n], host_ns(n), "{n} namespace should be the host's");
    }
    let host_name = read_trim("/proc/sys/kernel/hostname");
    assert_ne!(host_name, "vkt-host", "the hostname leaked to the host");
}

#[test]
fn user_namespace_maps_ids() {
    need_host!();
    if !Path::new("/proc/self/ns/user").exists() {
        eprintln!("skipped: no user namespaces");
        return;
    }
    let lab = Lab::new("userns");
    let base = 200_000 + (std::process::id() % 1000) * 65536;
    let b = lab.bundle(
        "b",
        sh(
            "id -u; id -g; cat /proc/self/uid_map; touch /tmp/made-inside; \
            mkdir /tmp/dir-inside; echo ok",
        ),
        |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": base, "size": 65536}]);
            c["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": base + 7, "size": 65536}]);
        },
    );
    let o = lab.run(&b, &lab.id("u")).ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "0");
    assert_eq!(l[1], "0");
    assert_eq!(
        l[2].split_whitespace().collect::<Vec<_>>(),
        ["0", &base.to_string(), "65536"]
    );
    assert_eq!(l.last(), Some(&"ok"));
    for f in ["made-inside", "dir-inside"] {
        let md = fs::metadata(b.join("rootfs/tmp").join(f)).unwrap();
        assert_eq!((md.uid(), md.gid()), (base, base + 7), "{f}");
    }
    // exec joins the same user namespace.
    let id = lab.id("u2");
    fs::remove_file(b.join("rootfs/tmp/made-inside")).unwrap();
    let mut cfg = lab.config(&b);
    cfg["process"]["args"] = json!(["sleep", "1000"]);
    lab.write_config(&b, &cfg);
    let init = lab.run_detached(&b, &id);
    let o = lab
        .vk(&["exec", &id, "sh", "-c", "id -u; touch /tmp/by-exec"])
        .ok();
    assert_eq!(o.stdout, "0\n");
    assert_eq!(
        fs::metadata(b.join("rootfs/tmp/by-exec")).unwrap().uid(),
        base
    );
    assert_ne!(
        fs::read_link(format!("/proc/{init}/ns/user")).unwrap(),
        fs::read_link("/proc/self/ns/user").unwrap()
    );
    lab.vk(&["delete", "-f", &id]).ok();
}

#[test]
fn time_namespace_offsets() {
    need_host!();
    if !Path::new("/proc/self/ns/time").exists() {
        eprintln!("skipped: no time namespaces in this kernel");
        return;
    }
    let lab = Lab::new("timens");
    let b = lab.bundle("b", sh("cat /proc/uptime"), |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] = json!({
            "boottime": {"secs": 864000, "nanosecs": 0},
            "monotonic": {"secs": 3600, "nanosecs": 0}
        });
    });
    let host_up = |s: &str| -> f64 { s.split_whitespace().next().unwrap().parse().unwrap() };
    let before = host_up(&fs::read_to_string("/proc/uptime").unwrap());
    let o = lab.run(&b, &lab.id("t")).ok();
    let after = host_up(&fs::read_to_string("/proc/uptime").unwrap());
    let inside = host_up(&o.stdout);
    assert!(
        inside >= before + 864000.0 && inside <= after + 864000.0 + 1.0,
        "uptime inside {inside}, host {before}..{after}"
    );
}

#[test]
fn join_namespaces_by_path() {
    need_host!();
    let lab = Lab::new("join");
    // A network namespace made by ip(8), with a veth pair to recognize it by.
    let netns = format!("vkt{}", std::process::id());
    let ip = |args: &[&str]| Command::new("ip").args(args).output();
    let made = ip(&["netns", "add", &netns]).is_ok_and(|o| o.status.success());
    struct NetnsGuard(String);
    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _guard = NetnsGuard(netns.clone());
    let b = lab.bundle("a", json!(["sleep", "1000"]), |c| {
        c["hostname"] = json!("alpha");
    });
    let a = lab.id("a");
    let apid = lab.run_detached(&b, &a);
    let b2 = lab.bundle("b", sh("hostname; cat /proc/net/dev"), |c| {
        c.as_object_mut().unwrap().remove("hostname");
        for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "uts" {
                n["path"] = json!(format!("/proc/{apid}/ns/uts"));
            }
            if n["type"] == "network" && made {
                n["path"] = json!(format!("/var/run/netns/{netns}"));
            }
        }
    });
    if made {
        // veth: this kernel may lack the dummy driver and cannot load modules.
        assert!(ip(&[
            "-n", &netns, "link", "add", "vktv0", "type", "veth", "peer", "name", "vktv1"
        ])
        .unwrap()
        .status
        .success());
    } else {
        eprintln!("skipped: joining a netns made by `ip netns add` (it failed here)");
    }
    let o = lab.run(&b2, &lab.id("b")).ok();
    assert_eq!(o.stdout.lines().next(), Some("alpha"));
    if made {
        assert!(o.stdout.contains("vktv0"), "{}", o.stdout);
    }
    // A namespace path that does not exist is an error naming it.
    let mut cfg = lab.config(&b2);
    cfg["linux"]["namespaces"][0]["path"] = json!("/proc/999999999/ns/pid");
    cfg["linux"]["namespaces"][0]["type"] = json!("pid");
    lab.write_config(&b2, &cfg);
    let o = lab.run(&b2, &lab.id("c")).fails();
    assert!(o.msg().contains("/proc/999999999/ns/pid"), "{}", o.stderr);
    lab.vk(&["delete", "-f", &a]).ok();
}

// ---------------------------------------------------------------------------------------
// Root filesystem

#[test]
fn readonly_root_and_no_pivot() {
    need_host!();
    let lab = Lab::new("roroot");
    let script =
        "touch /probe 2>&1; echo rc=$?; cat /etc/virtkit-rootfs >/dev/null && echo rootfs-ok; \
                  grep -c sandboxing /proc/self/mountinfo";
    let b = lab.bundle("b", sh(script), |c| c["root"]["readonly"] = json!(true));
    let o = lab.run(&b, &lab.id("ro"));
    // grep -c exits 1 when it counts 0: that is the container's exit code.
    assert!(o.stdout.contains("Read-only file system"), "{o:?}");
    assert!(o.stdout.contains("rc=1"), "{o:?}");
    assert!(o.stdout.contains("rootfs-ok"), "{o:?}");
    // pivot_root detached the host's mounts: none of them is visible.
    assert!(o.stdout.trim_end().ends_with("\n0"), "{o:?}");
    assert!(!b.join("rootfs/probe").exists());
    // --no-pivot: MS_MOVE + chroot; the same root, writable here.
    let b2 = lab.bundle("b2", sh(script), |_| {});
    let o = lab.vk(&[
        "run",
        "--no-pivot",
        "--bundle",
        b2.to_str().unwrap(),
        &lab.id("np"),
    ]);
    assert!(
        o.stdout.contains("rc=0") && o.stdout.contains("rootfs-ok"),
        "{o:?}"
    );
    assert!(b2.join("rootfs/probe").exists());
}

#[test]
fn bind_and_tmpfs_mounts() {
    need_host!();
    let lab = Lab::new("mounts");
    let src_file = lab.path("hostfile.txt");
    fs::write(&src_file, "from-host\n").unwrap();
    let src_dir = lab.path("hostdir");
    fs::create_dir(&src_dir).unwrap();
    fs::write(src_dir.join("inner"), "inner\n").unwrap();
    let rw_dir = lab.path("rwdir");
    fs::create_dir(&rw_dir).unwrap();
    let b = lab.bundle(
        "b",
        sh(
            "cat /etc/hostfile; echo x >> /etc/hostfile 2>/dev/null && echo file-writable; \
            cat /mnt/ro/inner; touch /mnt/ro/new 2>/dev/null && echo dir-writable; \
            echo written > /mnt/rw/out; cat /rel/inner; \
            stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo; \
            dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null || echo tmpfs-full",
        ),
        |c| {
            let m = c["mounts"].as_array_mut().unwrap();
            m.push(json!({"destination": "/etc/hostfile", "type": "bind",
                "source": src_file, "options": ["bind", "ro"]}));
            m.push(json!({"destination": "/mnt/ro", "type": "bind",
                "source": src_dir, "options": ["rbind", "ro", "nosuid"]}));
            m.push(json!({"destination": "/mnt/rw", "source": rw_dir, "options": ["bind"]}));
            // A relative source is relative to the bundle.
            m.push(json!({"destination": "/rel", "type": "none",
                "source": "../hostdir", "options": ["bind", "ro"]}));
            m.push(
                json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m", "mode=1700"]}),
            );
        },
    );
    let o = lab.run(&b, &lab.id("m")).ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "from-host", "{}", o.stdout);
    assert_eq!(l[1], "inner", "{}", o.stdout);
    assert_eq!(l[2], "inner", "{}", o.stdout);
    assert_eq!(l[3], "1700", "{}", o.stdout);
    assert!(
        l[4].contains("nosuid") && l[4].contains("nodev"),
        "{}",
        l[4]
    );
    assert!(l[4].contains("size=1024k"), "{}", l[4]);
    assert_eq!(l[5], "tmpfs-full", "{}", o.stdout);
    assert!(!o.stdout.contains("writable"), "{}", o.stdout);
    assert_eq!(read_trim(rw_dir.join("out")), "written");
    assert_eq!(read_trim(&src_file), "from-host");
    assert!(!src_dir.join("new").exists());
}

#[test]
fn masked_and_readonly_paths() {
    need_host!();
    let lab = Lab::new("mask");
    let b = lab.bundle(
        "b",
        sh(
            "echo secret=$(cat /etc/secret); echo dir=$(ls /etc/secretdir | wc -l); \
            echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c); \
            touch /etc/rodir/x 2>&1 | grep -o 'Read-only file system'; \
            cat /etc/rodir/keep; \
            echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo procsys-ro; \
            echo 1 > /proc/sysrq-trigger 2>/dev/null || echo sysrq-ro; \
            mount -t tmpfs none /etc/secretdir 2>/dev/null || echo remount-refused",
        ),
        |c| {
            let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
            masked.push(json!("/etc/secret"));
            masked.push(json!("/etc/secretdir"));
            masked.push(json!("/does/not/exist"));
            let ro = c["linux"]["readonlyPaths"].as_array_mut().unwrap();
            ro.push(json!("/etc/rodir"));
        },
    );
    fs::write(b.join("rootfs/etc/secret"), "s3cret").unwrap();
    fs::create_dir(b.join("rootfs/etc/secretdir")).unwrap();
    fs::write(b.join("rootfs/etc/secretdir/a"), "a").unwrap();
    fs::create_dir(b.join("rootfs/etc/rodir")).unwrap();
    fs::write(b.join("rootfs/etc/rodir/keep"), "keep\n").unwrap();
    let o = lab.run(&b, &lab.id("m")).ok();
    for want in [
        "secret=\n",
        "dir=0\n",
        "kcore=0\n",
        "Read-only file system\n",
        "keep\n",
        "procsys-ro\n",
        "sysrq-ro\n",
        "remount-refused\n",
    ] {
        assert!(o.stdout.contains(want), "{want:?} not in:\n{}", o.stdout);
    }
    assert!(!b.join("rootfs/etc/rodir/x").exists());
}

/// A host directory bind-mounted onto itself and made shared, unmounted (with whatever
/// propagated into it) on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: PathBuf) -> Option<SharedMount> {
        fs::create_dir_all(&dir).unwrap();
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["--bind", dir.to_str().unwrap()]) {
            return None;
        }
        let m = SharedMount(dir.clone());
        ok(&["--make-shared"]).then_some(m)
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.0).status();
    }
}

fn mounted_on_host(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

#[test]
fn rootfs_propagation() {
    need_host!();
    let lab = Lab::new("prop");
    // A volume from a shared host mount: rootfsPropagation decides whether mounts made on
    // either side later cross over (runc's semantics; the rootfs itself is always private).
    let Some(shared) = SharedMount::new(lab.path("shared")) else {
        eprintln!("skipped: cannot make a shared bind mount here");
        return;
    };
    let mut rts = vec![Rt::Ours];
    if debian_runc() {
        rts.push(Rt::Debian);
    }
    for mode in ["rslave", "rprivate", "rshared", "private", "slave"] {
        let mut seen = Vec::new();
        for &rt in &rts {
            let name = format!("{mode}-{rt:?}");
            let vol = shared.0.join(&name);
            fs::create_dir_all(vol.join("from-host")).unwrap();
            fs::create_dir_all(vol.join("from-ctr")).unwrap();
            let b = lab.bundle(&name, json!(["sleep", "1000"]), |c| {
                c["linux"]["rootfsPropagation"] = json!(mode);
                c["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"destination": "/vol", "source": vol, "options": ["rbind"]}));
            });
            let id = lab.id(&name);
            lab.rt(rt, &["run", "-d", "--bundle", b.to_str().unwrap(), &id])
                .ok();
            // The host mounts into the volume after the container started.
            assert!(Command::new("mount")
                .args(["-t", "tmpfs", "vkt-prop"])
                .arg(vol.join("from-host"))
                .status()
                .unwrap()
                .success());
            let o = lab.rt(
                rt,
                &[
                    "exec",
                    "--cap",
                    "CAP_SYS_ADMIN",
                    &id,
                    "sh",
                    "-c",
                    "grep -c ' /vol/from-host ' /proc/self/mountinfo; \
                     mount -t tmpfs vkt-in /vol/from-ctr && echo mounted",
                ],
            );
            assert!(o.stdout.contains("mounted"), "{mode}: {o:?}");
            let seen_inside = o.stdout.starts_with("1\n");
            let seen_outside = mounted_on_host(&vol.join("from-ctr"));
            seen.push((seen_inside, seen_outside));
            lab.rt(rt, &["delete", "-f", &id]).ok();
        }
        // (host mount seen inside, container mount seen on the host)
        let want = match mode {
            "rslave" => Some((true, false)),
            "rprivate" => Some((false, false)),
            "rshared" => Some((true, true)),
            // Not recursive: the host's shared mounts below / keep their propagation (runc
            // does the same); only compared with runc.
            _ => None,
        };
        if let Some(w) = want {
            assert_eq!(seen[0], w, "{mode}");
        }
        if seen.len() == 2 {
            assert_eq!(seen[0], seen[1], "{mode}: ours vs runc");
        }
    }
    let b = lab.bundle("bad", sh("true"), |c| {
        c["linux"]["rootfsPropagation"] = json!("sideways");
    });
    let o = lab.run(&b, &lab.id("bad")).fails();
    assert!(o.msg().contains("sideways"), "{}", o.stderr);
}

#[test]
fn devices_configured_and_default() {
    need_host!();
    let lab = Lab::new("dev");
    let b = lab.bundle(
        "b",
        sh(
            "for d in /dev/vkt-null /dev/sub/vkt-zero /dev/vkt-fifo /dev/null /dev/zero /dev/full \
            /dev/random /dev/urandom /dev/tty; do echo $d $(stat -c '%F %t:%T %a %u:%g' $d); done; \
            echo hi > /dev/vkt-null && echo null-ok; head -c 3 /dev/sub/vkt-zero | wc -c; \
            readlink /dev/fd; readlink /dev/stdin; readlink /dev/ptmx",
        ),
        |c| {
            c["linux"]["devices"] = json!([
                {"path": "/dev/vkt-null", "type": "c", "major": 1, "minor": 3,
                 "fileMode": 0o620, "uid": 0, "gid": 5},
                {"path": "/dev/sub/vkt-zero", "type": "c", "major": 1, "minor": 5},
                {"path": "/dev/vkt-fifo", "type": "p", "major": 0, "minor": 0, "fileMode": 0o600}
            ]);
        },
    );
    let o = lab.run(&b, &lab.id("d")).ok();
    let find = |dev: &str| {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{dev} ")))
            .unwrap_or_else(|| panic!("{dev} not in {}", o.stdout))
            .to_string()
    };
    assert_eq!(find("/dev/vkt-null"), "character special file 1:3 620 0:5");
    assert_eq!(
        find("/dev/sub/vkt-zero"),
        "character special file 1:5 666 0:0"
    );
    assert_eq!(find("/dev/vkt-fifo"), "fifo 0:0 600 0:0");
    for (d, mm) in [
        ("/dev/null", "1:3"),
        ("/dev/zero", "1:5"),
        ("/dev/full", "1:7"),
        ("/dev/random", "1:8"),
        ("/dev/urandom", "1:9"),
        ("/dev/tty", "5:0"),
    ] {
        assert_eq!(find(d), format!("character special file {mm} 666 0:0"));
    }
    assert!(o.stdout.contains("null-ok\n3\n"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("/proc/self/fd\n/proc/self/fd/0\npts/ptmx\n"),
        "{}",
        o.stdout
    );
}

#[test]
fn mount_into_proc_through_symlink_refused() {
    need_host!();
    let lab = Lab::new("procmnt");
    for (i, dest) in ["/etc/pr/sys", "/proc/sys/kernel", "/etc/pr/../proc/1"]
        .iter()
        .enumerate()
    {
        let b = lab.bundle(&format!("b{i}"), sh("echo ran"), |c| {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]
            }));
        });
        std::os::unix::fs::symlink("/proc", b.join("rootfs/etc/pr")).unwrap();
        let o = lab.run(&b, &lab.id(&format!("p{i}"))).fails();
        assert!(!o.stdout.contains("ran"));
        assert!(o.msg().contains("/proc"), "{dest}: {}", o.stderr);
        assert_eq!(
            lab.vk(&["list", "-q"]).ok().stdout,
            "",
            "a failed create left state"
        );
    }
}

#[test]
fn symlink_in_rootfs_does_not_escape() {
    need_host!();
    let lab = Lab::new("escape");
    let marker = format!("vkt-escape-{}", std::process::id());
    let src = lab.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("marker"), "m\n").unwrap();
    let file_src = lab.path("file-src");
    fs::write(&file_src, "f\n").unwrap();
    let b = lab.bundle(
        "b",
        sh(&format!(
            "cat /{marker}/marker /{marker}-file; ls /etc/evil2/ | grep -c {marker}"
        )),
        |c| {
            let m = c["mounts"].as_array_mut().unwrap();
            m.push(json!({"destination": format!("/etc/evil/{marker}"),
                "source": src, "options": ["bind", "ro"]}));
            m.push(json!({"destination": format!("/etc/evil2/{marker}-file"),
                "source": file_src, "options": ["bind", "ro"]}));
            m.push(json!({"destination": format!("/etc/evil3/{marker}-tmp"),
                "type": "tmpfs", "source": "tmpfs"}));
        },
    );
    std::os::unix::fs::symlink("/", b.join("rootfs/etc/evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", b.join("rootfs/etc/evil2")).unwrap();
    std::os::unix::fs::symlink("/../..", b.join("rootfs/etc/evil3")).unwrap();
    let id = lab.id("e");
    lab.vk(&["create", "--bundle", b.to_str().unwrap(), &id])
        .ok();
    for p in [
        format!("/{marker}"),
        format!("/{marker}-file"),
        format!("/{marker}-tmp"),
    ] {
        assert!(!Path::new(&p).exists(), "{p} appeared on the host");
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&marker),
        "a mount leaked to the host:\n{mounts}"
    );
    lab.vk(&["start", &id]).ok();
    lab.wait_status(Rt::Ours, &id, "stopped");
    lab.vk(&["delete", &id]).ok();
    // Inside, the mounts landed in the container's root.
    let o = lab.run(&b, &lab.id("e2"));
    assert_eq!(o.stdout, "m\nf\n3\n", "{o:?}");
    for p in [
        format!("/{marker}"),
        format!("/{marker}-file"),
        format!("/{marker}-tmp"),
    ] {
        assert!(!Path::new(&p).exists(), "{p} appeared on the host");
    }
}

// ---------------------------------------------------------------------------------------
// Process

#[test]
fn process_user_umask_env_cwd_rlimits_nnp_oom() {
    need_host!();
    let lab = Lab::new("proc");
    let b = lab.bundle(
        "b",
        sh(
            "id -u; id -g; grep Groups /proc/self/status; umask; echo \"$FOO\"; pwd; \
            ulimit -n; ulimit -Hn; grep NoNewPrivs /proc/self/status; \
            cat /proc/self/oom_score_adj; echo $HOME; touch /tmp/umask-probe",
        ),
        |c| {
            let p = &mut c["process"];
            p["user"] = json!({"uid": 1000, "gid": 1001, "additionalGids": [5, 6], "umask": 0o027});
            p["env"] = json!(["PATH=/bin:/usr/bin", "FOO=bar baz"]);
            p["cwd"] = json!("/home/new/sub");
            p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1234}]);
            p["noNewPrivileges"] = json!(true);
            p["oomScoreAdj"] = json!(345);
        },
    );
    let o = lab.run(&b, &lab.id("p")).ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        l,
        [
            "1000",
            "1001",
            "Groups:\t5 6 ",
            "0027",
            "bar baz",
            "/home/new/sub",
            "1234",
            "2048",
            "NoNewPrivs:\t1",
            "345",
            "/"
        ],
        "{}",
        o.stdout
    );
    let md = fs::metadata(b.join("rootfs/tmp/umask-probe")).unwrap();
    assert_eq!(md.mode() & 0o777, 0o640);
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    // The runtime's own settings did not leak: without noNewPrivileges the bit is clear.
    let mut cfg = lab.config(&b);
    cfg["process"]["noNewPrivileges"] = json!(false);
    cfg["process"]["args"] = json!(["grep", "NoNewPrivs", "/proc/self/status"]);
    lab.write_config(&b, &cfg);
    assert_eq!(lab.run(&b, &lab.id("p2")).ok().stdout, "NoNewPrivs:\t0\n");
    if debian_runc() {
        cfg["process"]["noNewPrivileges"] = json!(true);
        cfg["process"]["args"] = sh("id -u; id -g; grep Groups /proc/self/status; umask; \
            echo \"$FOO\"; pwd; ulimit -n; ulimit -Hn; grep NoNewPrivs /proc/self/status; \
            cat /proc/self/oom_score_adj; echo $HOME");
        lab.write_config(&b, &cfg);
        let t = lab
            .rt(
                Rt::Debian,
                &["run", "--bundle", b.to_str().unwrap(), &lab.id("d")],
            )
            .ok();
        assert_eq!(t.stdout.lines().collect::<Vec<_>>(), l, "ours vs runc");
    }
}

#[test]
fn capabilities_all_five_sets() {
    need_host!();
    let lab = Lab::new("caps");
    let bnd = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
    ];
    let inh = ["CAP_KILL", "CAP_NET_RAW"];
    let prm = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"];
    let eff = ["CAP_CHOWN", "CAP_KILL"];
    let amb = ["CAP_KILL"];
    let caps = json!({"bounding": bnd, "inheritable": inh, "permitted": prm,
        "effective": eff, "ambient": amb});
    // After execve a non-root user keeps only what is ambient (in permitted and effective);
    // root would get its bounding set back, but noNewPrivileges (the default config's) caps
    // what execve may grant at the permitted set it had. As the kernel defines it, and as
    // runc yields.
    let cases = [
        (1000, true, [inh.as_slice(), &amb, &amb, &bnd, &amb]),
        (0, true, [&inh, &prm, &prm, &bnd, &amb]),
        (0, false, [&inh, &bnd, &bnd, &bnd, &amb]),
    ];
    for (uid, nnp, want) in cases {
        let uid_nnp = format!("{uid}-{nnp}");
        let b = lab.bundle(
            &format!("b{uid_nnp}"),
            sh("grep ^Cap /proc/self/status"),
            |c| {
                c["process"]["user"] = json!({"uid": uid, "gid": uid});
                c["process"]["capabilities"] = caps.clone();
                c["process"]["noNewPrivileges"] = json!(nnp);
            },
        );
        let uid = uid_nnp;
        let o = lab.run(&b, &lab.id(&format!("c{uid}"))).ok();
        let got: Vec<String> = o
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let names = ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"];
        let expect: Vec<String> = names
            .iter()
            .zip(want)
            .map(|(n, set)| format!("{n} {}", cap_hex(set)))
            .collect();
        assert_eq!(got, expect, "uid {uid}");
        if debian_runc() {
            let t = lab
                .rt(
                    Rt::Debian,
                    &[
                        "run",
                        "--bundle",
                        b.to_str().unwrap(),
                        &lab.id(&format!("d{uid}")),
                    ],
                )
                .ok();
            assert_eq!(o.stdout, t.stdout, "uid {uid}: ours vs runc");
        }
    }
    // A capability this kernel does not know is skipped, as runc does (with a warning).
    let b = lab.bundle("unknown", sh("grep ^CapBnd /proc/self/status"), |c| {
        c["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_NO_SUCH_THING"]);
    });
    let o = lab.run(&b, &lab.id("unk"));
    // Either refused with a message naming it, or run without it: never a panic.
    if o.code == 0 {
        assert_eq!(
            o.stdout.split_whitespace().nth(1),
            Some(cap_hex(&["CAP_KILL"]).as_str())
        );
    } else {
        assert!(o.stderr.contains("CAP_NO_SUCH_THING"), "{}", o.stderr);
    }
}

#[test]
fn sysctl_in_new_netns() {
    need_host!();
    let lab = Lab::new("sysctl");
    let host_before = read_trim("/proc/sys/net/ipv4/ip_forward");
    let want = if host_before == "1" { "0" } else { "1" };
    let b = lab.bundle(
        "b",
        sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax"),
        |c| {
            c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": want, "kernel.msgmax": "12345"});
        },
    );
    let o = lab.run(&b, &lab.id("s")).ok();
    assert_eq!(o.stdout, format!("{want}\n12345\n"));
    assert_eq!(read_trim("/proc/sys/net/ipv4/ip_forward"), host_before);
    assert_ne!(read_trim("/proc/sys/kernel/msgmax"), "12345");
    // A key that does not exist is an error naming it.
    let mut cfg = lab.config(&b);
    cfg["linux"]["sysctl"] = json!({"net.ipv4.no_such_key": "1"});
    lab.write_config(&b, &cfg);
    let o = lab.run(&b, &lab.id("bad")).fails();
    assert!(o.msg().contains("net.ipv4.no_such_key"), "{}", o.stderr);
}

#[test]
fn personality_linux32() {
    need_host!();
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: LINUX32 shows as i686 only on x86_64");
        return;
    }
    let lab = Lab::new("pers");
    let b = lab.bundle("b", json!(["uname", "-m"]), |c| {
        c["linux"]["personality"] = json!({"domain": "LINUX32"});
    });
    assert_eq!(lab.run(&b, &lab.id("p")).ok().stdout, "i686\n");
    let b = lab.bundle("b64", json!(["uname", "-m"]), |c| {
        c["linux"]["personality"] = json!({"domain": "LINUX"});
    });
    assert_eq!(lab.run(&b, &lab.id("p64")).ok().stdout, "x86_64\n");
}

/// A console socket: accepts one connection and returns the descriptor received with
/// SCM_RIGHTS (runc's protocol) and the message text.
fn receive_console(listener: std::os::unix::net::UnixListener) -> (OwnedFd, String) {
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4096];
    let mut cmsg = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr pointing at live buffers, as recvmsg(2) expects.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cmsg.len();
    // SAFETY: recvmsg on a connected socket we own, into the buffers above.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: walking the control messages the kernel wrote into `cmsg`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null(), "no descriptor received on the console socket");
        assert_eq!((*c).cmsg_level, libc::SOL_SOCKET);
        assert_eq!((*c).cmsg_type, libc::SCM_RIGHTS);
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
        (
            OwnedFd::from_raw_fd(fd),
            String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
        )
    }
}

#[test]
fn terminal_through_console_socket() {
    need_host!();
    let lab = Lab::new("tty");
    let sock = lab.path("console.sock");
    let b = lab.bundle(
        "b",
        sh("tty; stty size; echo hello-from-the-tty; sleep 0.2"),
        |c| {
            c["process"]["terminal"] = json!(true);
            c["process"]["consoleSize"] = json!({"height": 31, "width": 101});
        },
    );
    let id = lab.id("t");
    // Without a console socket a detached terminal is refused.
    let o = lab
        .vk(&["run", "-d", "--bundle", b.to_str().unwrap(), &id])
        .fails();
    assert!(o.msg().contains("console socket"), "{}", o.stderr);
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || receive_console(listener));
    lab.vk(&[
        "run",
        "-d",
        "--console-socket",
        sock.to_str().unwrap(),
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ])
    .ok();
    let (master, _name) = t.join().unwrap();
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1024];
    // Read until the container closes the terminal (EIO on the master) or the text is in.
    while Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).contains("hello-from-the-tty") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert!(text.contains("/dev/pts/0\n"), "{text:?}");
    assert!(text.contains("31 101\n"), "{text:?}");
    assert!(text.contains("hello-from-the-tty"), "{text:?}");
    lab.wait_status(Rt::Ours, &id, "stopped");
    lab.vk(&["delete", &id]).ok();
    // exec -t through a console socket too.
    let b2 = lab.bundle("b2", json!(["sleep", "1000"]), |_| {});
    let id2 = lab.id("t2");
    lab.run_detached(&b2, &id2);
    let sock2 = lab.path("console2.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock2).unwrap();
    let t = std::thread::spawn(move || receive_console(listener));
    lab.vk(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        sock2.to_str().unwrap(),
        &id2,
        "sh",
        "-c",
        "tty; echo exec-tty; sleep 0.2",
    ])
    .ok();
    let (master, _) = t.join().unwrap();
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).contains("exec-tty") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert!(
        text.contains("/dev/pts/") && text.contains("exec-tty"),
        "{text:?}"
    );
    lab.vk(&["delete", "-f", &id2]).ok();
}

// ---------------------------------------------------------------------------------------
// Hooks

/// A hook that records its kind and stdin state as "<n>-<kind>.json" in `dir` (n counts the
/// hooks before it), with `sh` found at `sh` (the host's or the container's).
fn recording_hook(dir: &Path, kind: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("n=$(ls {d} | wc -l); cat > {d}/$n-{kind}.json", d = dir.display())],
    })
}

/// Runs a container with every hook recording itself; returns (kind, state) in order.
fn hooks_run(lab: &Lab, rt: Rt, name: &str) -> (Vec<(String, Value)>, PathBuf) {
    let marks = lab.path(&format!("marks-{name}"));
    fs::create_dir_all(&marks).unwrap();
    fs::set_permissions(&marks, fs::Permissions::from_mode(0o777)).unwrap();
    let b = lab.bundle(name, json!(["sleep", "1000"]), |c| {
        let mut hooks = serde_json::Map::new();
        for kind in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            hooks.insert(kind.into(), json!([recording_hook(&marks, kind)]));
        }
        c["hooks"] = Value::Object(hooks);
        // startContainer runs inside the container: it sees the marks at the same path.
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": marks, "source": marks, "options": ["bind"]}));
        c["annotations"] = json!({"org.example.vkt": "yes"});
    });
    let id = lab.id(name);
    let bs = b.to_str().unwrap();
    lab.rt(rt, &["create", "--bundle", bs, &id]).ok();
    lab.rt(rt, &["start", &id]).ok();
    lab.rt(rt, &["delete", "-f", &id]).ok();
    let mut got: Vec<(usize, String, Value)> = fs::read_dir(&marks)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (n, rest) = name.split_once('-').unwrap();
            let kind = rest.trim_end_matches(".json").to_string();
            let text = fs::read_to_string(e.path()).unwrap();
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{kind} got bad state {text:?}: {e}"));
            (n.parse().unwrap(), kind, v)
        })
        .collect();
    got.sort_by_key(|g| g.0);
    (got.into_iter().map(|(_, k, v)| (k, v)).collect(), b)
}

#[test]
fn hooks_run_in_order_with_state() {
    need_host!();
    let lab = Lab::new("hooks");
    let (got, b) = hooks_run(&lab, Rt::Ours, "o");
    let kinds: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let id = lab.id("o");
    for (kind, st) in &got {
        assert_eq!(st["id"], id.as_str(), "{kind}: {st}");
        assert_eq!(st["bundle"], b.to_str().unwrap(), "{kind}: {st}");
        assert_eq!(st["annotations"]["org.example.vkt"], "yes", "{kind}: {st}");
        assert!(st["ociVersion"].is_string(), "{kind}: {st}");
        if kind != "poststop" {
            assert!(st["pid"].as_i64().unwrap() > 0, "{kind}: {st}");
        }
    }
    let status = |k: &str| got.iter().find(|g| g.0 == k).unwrap().1["status"].clone();
    assert_eq!(status("poststart"), "running");
    assert_eq!(status("poststop"), "stopped");
    assert!(got[5].1.get("pid").is_none(), "{}", got[5].1);
    // Hooks inside the container see the container's pid namespace.
    assert_eq!(got[2].1["pid"], 1);
    assert_eq!(got[3].1["pid"], 1);
    if debian_runc() {
        // runc 1.1 runs poststart at create time, before the program runs (fixed in runc
        // 1.2; the spec wants it after): compared without it.
        let (theirs, _) = hooks_run(&lab, Rt::Debian, "d");
        let shape = |v: &Vec<(String, Value)>| -> Vec<(String, Value, Value)> {
            v.iter()
                .filter(|(k, _)| k != "poststart")
                .map(|(k, s)| {
                    let pid = s.get("pid").map(|p| json!(p.as_i64().unwrap() > 0));
                    (k.clone(), s["status"].clone(), pid.unwrap_or(Value::Null))
                })
                .collect()
        };
        assert_eq!(
            shape(&got),
            shape(&theirs),
            "ours vs runc: (hook, status, pid>0)"
        );
    }
}

#[test]
fn hook_timeout_and_failure_fail_create() {
    need_host!();
    let lab = Lab::new("hooktime");
    let pidfile = lab.path("hook.pid");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |c| {
        c["hooks"] = json!({"createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo $$ > {}; exec sleep 60", pidfile.display())],
            "timeout": 1
        }]});
    });
    let id = lab.id("t");
    let t0 = Instant::now();
    let o = lab
        .vk(&["create", "--bundle", b.to_str().unwrap(), &id])
        .fails();
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        o.msg().contains("timeout") && o.msg().contains("createRuntime"),
        "{}",
        o.stderr
    );
    let hook_pid: i32 = read_trim(&pidfile).parse().unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || !Path::new(&format!(
            "/proc/{hook_pid}"
        ))
        .exists()
            || proc_status(hook_pid, "State")
                .is_some_and(|s| s.starts_with('Z'))),
        "the hanging hook still runs"
    );
    assert_eq!(
        lab.vk(&["list", "-q"]).ok().stdout,
        "",
        "a failed create left state"
    );
    // A failing hook (exit 3) fails the create too, with its output in the message.
    let mut cfg = lab.config(&b);
    cfg["hooks"] = json!({"prestart": [{"path": "/bin/sh",
        "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"]}]});
    lab.write_config(&b, &cfg);
    let o = lab
        .vk(&["run", "--bundle", b.to_str().unwrap(), &id])
        .fails();
    assert!(
        o.msg().contains("hook-says-no") && o.msg().contains("prestart"),
        "{}",
        o.stderr
    );
    assert_eq!(lab.vk(&["list", "-q"]).ok().stdout, "");
    // argv[0] and env are the hook's own.
    let argv = lab.path("argv");
    cfg["hooks"] = json!({"poststart": [{"path": "/bin/sh",
        "args": ["myname", "-c",
            format!("echo $(tr '\\0' '\\n' < /proc/$$/cmdline | head -1) $0 $VKT_X > {}",
                argv.display()),
            "one"],
        "env": ["VKT_X=ex"]}]});
    lab.write_config(&b, &cfg);
    lab.vk(&["run", "-d", "--bundle", b.to_str().unwrap(), &id])
        .ok();
    assert_eq!(read_trim(&argv), "myname one ex");
    lab.vk(&["delete", "-f", &id]).ok();
}

// ---------------------------------------------------------------------------------------
// cgroups enforced

#[test]
fn memory_hog_is_oom_killed() {
    need_host!();
    let lab = Lab::new("oom");
    let b = lab.bundle(
        "b",
        json!(["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]),
        |c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
        },
    );
    let o = lab.run(&b, &lab.id("m"));
    assert_eq!(o.code, 137, "{o:?}");
    // The same without a limit is fine.
    let b = lab.bundle(
        "b2",
        json!(["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]),
        |_| {},
    );
    lab.run(&b, &lab.id("m2")).ok();
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    need_host!();
    let lab = Lab::new("pids");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |c| {
        c["linux"]["resources"]["pids"] = json!({"limit": 12});
    });
    let id = lab.id("p");
    let init = lab.run_detached(&b, &id);
    let o = lab.vk(&[
        "exec",
        &id,
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; echo all-forked",
    ]);
    assert!(!o.stdout.contains("all-forked"), "{o:?}");
    assert!(o.stderr.contains("can't fork"), "{o:?}");
    let cg = cgroup_dir(init, "pids").unwrap();
    assert_eq!(read_trim(cg.join("pids.max")), "12");
    let current: u32 = read_trim(cg.join("pids.current")).parse().unwrap();
    assert!(current <= 12, "pids.current {current}");
    let pids: Vec<i32> =
        serde_json::from_str(&lab.vk(&["ps", "-f", "json", &id]).ok().stdout).unwrap();
    assert!(
        pids.len() <= 12 && pids.len() >= 10,
        "{} processes",
        pids.len()
    );
    lab.vk(&["delete", "-f", &id]).ok();
    assert!(!cg.exists());
}

#[test]
fn device_cgroup_denies_unlisted_devices() {
    need_host!();
    let lab = Lab::new("devcg");
    let b = lab.bundle(
        "b",
        sh(
            "mknod /dev/vkt-mem c 1 1 && cat /dev/vkt-mem 2>&1 | head -c 200; echo; \
            mknod /dev/vkt-z c 1 5 && head -c 4 /dev/vkt-z | wc -c; \
            mknod /dev/vkt-kmsg c 1 11 && \
            (echo vkt-ctr-test > /dev/vkt-kmsg 2>/dev/null && echo kmsg-open || echo kmsg-denied)",
        ),
        |c| {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_MKNOD"));
            }
        },
    );
    let o = lab.run(&b, &lab.id("d")).ok();
    assert!(
        o.stdout
            .contains("can't open '/dev/vkt-mem': Operation not permitted"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("\n4\n"), "{}", o.stdout);
    assert!(o.stdout.contains("kmsg-denied"), "{}", o.stdout);
    // An allow rule in the config opens one device up (write only: reading /dev/kmsg
    // would need CAP_SYSLOG, whatever the cgroup says).
    let mut cfg = lab.config(&b);
    cfg["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}));
    lab.write_config(&b, &cfg);
    let o = lab.run(&b, &lab.id("d2")).ok();
    assert!(o.stdout.contains("kmsg-open"), "{}", o.stdout);
}

// ---------------------------------------------------------------------------------------
// Security

/// The descriptor numbers a process has open, from the host's /proc.
fn open_fds(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    v
}

/// A runtime command that inherits extra descriptors: `fds` are (number, file) pairs made
/// non-close-on-exec in the child before it runs the runtime.
fn with_fds(mut cmd: Command, fds: &[(i32, &fs::File)]) -> Command {
    let pairs: Vec<(i32, i32)> = fds.iter().map(|(n, f)| (*n, f.as_raw_fd())).collect();
    // SAFETY: only dup2/fcntl between fork and exec (async-signal-safe), on descriptors
    // the parent keeps open until the child has run.
    unsafe {
        cmd.pre_exec(move || {
            for (n, fd) in &pairs {
                if libc::dup2(*fd, *n) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 onto the same number keeps FD_CLOEXEC: clear it.
                libc::fcntl(*n, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn no_host_fd_leaks_and_preserve_fds() {
    need_host!();
    let lab = Lab::new("fds");
    let secret = fs::File::open("/etc/hostname").unwrap();
    let dir = fs::File::open("/").unwrap();
    let p3 = fs::File::create(lab.path("preserved-3")).unwrap();
    let p4 = fs::File::create(lab.path("preserved-4")).unwrap();
    let b = lab.bundle("b", json!(["sleep", "1000"]), |_| {});
    let bs = b.to_str().unwrap();
    // Plain run -d with two extra host descriptors open in the caller.
    let id = lab.id("plain");
    let cmd = with_fds(
        lab.cmd(Rt::Ours, &["run", "-d", "--bundle", bs, &id]),
        &[(7, &secret), (9, &dir)],
    );
    run_cmd(cmd, lab.tmp.path()).ok();
    let pid = lab.pid(&id);
    assert_eq!(
        open_fds(pid),
        [0, 1, 2],
        "the container's init got host descriptors"
    );
    // exec (detached and not) the same.
    let pf = lab.path("exec.pid");
    let cmd = with_fds(
        lab.cmd(
            Rt::Ours,
            &[
                "exec",
                "-d",
                "--pid-file",
                pf.to_str().unwrap(),
                &id,
                "sleep",
                "999",
            ],
        ),
        &[(7, &secret), (9, &dir)],
    );
    run_cmd(cmd, lab.tmp.path()).ok();
    let epid: i32 = read_trim(&pf).parse().unwrap();
    assert_eq!(
        open_fds(epid),
        [0, 1, 2],
        "an exec'd process got host descriptors"
    );
    let cmd = with_fds(
        lab.cmd(Rt::Ours, &["exec", &id, "ls", "/proc/self/fd"]),
        &[(7, &secret), (9, &dir)],
    );
    // ls opens the directory it lists (3).
    assert_eq!(run_cmd(cmd, lab.tmp.path()).ok().stdout, "0\n1\n2\n3\n");
    lab.vk(&["delete", "-f", &id]).ok();
    // --preserve-fds 2: 3 and 4 go in, 7 and 9 still do not.
    let id = lab.id("pres");
    let cmd = with_fds(
        lab.cmd(
            Rt::Ours,
            &["run", "-d", "--preserve-fds", "2", "--bundle", bs, &id],
        ),
        &[(3, &p3), (4, &p4), (7, &secret), (9, &dir)],
    );
    run_cmd(cmd, lab.tmp.path()).ok();
    let pid = lab.pid(&id);
    assert_eq!(open_fds(pid), [0, 1, 2, 3, 4]);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/3")).unwrap(),
        lab.path("preserved-3")
    );
    let pf = lab.path("exec2.pid");
    let cmd = with_fds(
        lab.cmd(
            Rt::Ours,
            &[
                "exec",
                "-d",
                "--pid-file",
                pf.to_str().unwrap(),
                "--preserve-fds",
                "1",
                &id,
                "sh",
                "-c",
                "echo via-3 >&3; exec sleep 999",
            ],
        ),
        &[(3, &p3), (7, &secret)],
    );
    run_cmd(cmd, lab.tmp.path()).ok();
    let epid: i32 = read_trim(&pf).parse().unwrap();
    assert!(wait_for(Duration::from_secs(5), || proc_status(
        epid, "Name"
    )
    .as_deref()
        == Some("sleep")));
    assert_eq!(open_fds(epid), [0, 1, 2, 3]);
    assert_eq!(
        fs::read_link(format!("/proc/{epid}/fd/3")).unwrap(),
        lab.path("preserved-3")
    );
    assert_eq!(read_trim(lab.path("preserved-3")), "via-3");
    lab.vk(&["delete", "-f", &id]).ok();
}

#[test]
fn runtime_exe_cannot_be_opened_for_writing() {
    need_host!();
    let lab = Lab::new("exe");
    let b = lab.bundle("b", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("x");
    lab.vk(&["create", "--bundle", b.to_str().unwrap(), &id])
        .ok();
    // The init waits in the created state: it is still the runtime.
    let pid = lab.pid(&id);
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let real = fs::canonicalize(env!("CARGO_BIN_EXE_virtkit")).unwrap();
    assert_eq!(
        exe.file_name(),
        real.file_name(),
        "the init is not the runtime? {}",
        exe.display()
    );
    for (read, trunc) in [(false, false), (true, false), (false, true)] {
        let r = fs::OpenOptions::new()
            .read(read)
            .write(true)
            .truncate(trunc)
            .open(format!("/proc/{pid}/exe"));
        match r {
            Ok(_) => panic!("/proc/{pid}/exe ({}) opened for writing", exe.display()),
            Err(e) => assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::ETXTBSY) | Some(libc::EROFS) | Some(libc::EPERM)
                ),
                "unexpected error {e}"
            ),
        }
    }
    // Once started, the init is the container's program; the runtime binary is unchanged.
    let before = fs::read(&real).unwrap().len();
    lab.vk(&["start", &id]).ok();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("busybox"), "{}", exe.display());
    lab.vk(&["delete", "-f", &id]).ok();
    assert_eq!(fs::read(&real).unwrap().len(), before);
}

#[test]
fn cwd_through_leaked_fd_is_refused() {
    need_host!();
    let lab = Lab::new("cwdfd");
    // CVE-2024-21626: a cwd of /proc/self/fd/N reaching a descriptor of the runtime's.
    let hostdir = lab.path("host-secret-dir");
    fs::create_dir(&hostdir).unwrap();
    fs::write(hostdir.join("vkt-host-secret"), "x").unwrap();
    let leak = fs::File::open(&hostdir).unwrap();
    for n in 3..=12 {
        let b = lab.bundle(&format!("b{n}"), sh("pwd; ls; ls ../../../"), |c| {
            c["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
        });
        let id = lab.id(&format!("c{n}"));
        let cmd = with_fds(
            lab.cmd(Rt::Ours, &["run", "--bundle", b.to_str().unwrap(), &id]),
            &[(7, &leak)],
        );
        let o = run_cmd(cmd, lab.tmp.path());
        assert!(
            !o.stdout.contains("vkt-host-secret") && !o.stdout.contains("wt-tests"),
            "cwd /proc/self/fd/{n} reached the host: {o:?}"
        );
        if o.code == 0 {
            // Allowed only if it stayed inside (a directory of the container's own).
            assert!(!o.stdout.starts_with("(unreachable)"), "{o:?}");
        }
    }
    // exec --cwd the same.
    let b = lab.bundle("bx", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("x");
    lab.run_detached(&b, &id);
    for n in 3..=12 {
        let cwd = format!("/proc/self/fd/{n}");
        let cmd = with_fds(
            lab.cmd(
                Rt::Ours,
                &["exec", "--cwd", &cwd, &id, "sh", "-c", "pwd; ls"],
            ),
            &[(7, &leak)],
        );
        let o = run_cmd(cmd, lab.tmp.path());
        assert!(
            !o.stdout.contains("vkt-host-secret"),
            "exec --cwd {cwd} reached the host: {o:?}"
        );
    }
    lab.vk(&["delete", "-f", &id]).ok();
}

// ---------------------------------------------------------------------------------------
// Errors that say what happened

#[test]
fn error_messages() {
    need_host!();
    let lab = Lab::new("errors");
    // A user namespace where uid 1000 has no mapping.
    let b = lab.bundle("unmapped", json!(["id"]), |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 300000, "size": 1}]);
        // All gids mapped (devpts wants gid 5): only the uid lacks a mapping.
        c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
        c["process"]["user"] = json!({"uid": 1000, "gid": 0});
    });
    let o = lab.run(&b, &lab.id("um")).fails();
    let m = o.msg();
    assert!(m.contains("1000") && m.contains("uidMappings"), "{m}");
    // Malformed config.json: the file is named.
    let b = lab.bundle("badjson", json!(["true"]), |_| {});
    fs::write(
        b.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", \"process\": [}",
    )
    .unwrap();
    let o = lab.run(&b, &lab.id("bj")).fails();
    assert!(
        o.msg()
            .contains(&b.join("config.json").display().to_string()),
        "{}",
        o.stderr
    );
    // A config of the wrong shape too.
    fs::write(b.join("config.json"), "{\"ociVersion\": 1}").unwrap();
    let o = lab.run(&b, &lab.id("bj2")).fails();
    assert!(o.msg().contains("config.json"), "{}", o.stderr);
    // Missing rootfs.
    let b = lab.bundle("norootfs", json!(["true"]), |c| {
        c["root"]["path"] = json!("no-such-rootfs");
    });
    let o = lab.run(&b, &lab.id("nr")).fails();
    assert!(o.msg().contains("no-such-rootfs"), "{}", o.stderr);
    // No bundle at all.
    let o = lab
        .vk(&["run", "--bundle", "/nonexistent/bundle", &lab.id("nb")])
        .fails();
    assert!(o.msg().contains("/nonexistent/bundle"), "{}", o.stderr);
    // Bad ids.
    let good = lab.bundle("good", json!(["true"]), |_| {});
    for bad in ["../escape", "a/b", ""] {
        let o = lab
            .vk(&["create", "--bundle", good.to_str().unwrap(), bad])
            .fails();
        assert!(
            o.msg().contains("id") || o.msg().contains("argument"),
            "{bad:?}: {}",
            o.stderr
        );
    }
    assert!(!lab.path("escape").exists() && !lab.root(Rt::Ours).join("a").exists());
    // Bad signal names and numbers on a live container.
    let b = lab.bundle("sig", json!(["sleep", "1000"]), |_| {});
    let id = lab.id("sig");
    lab.run_detached(&b, &id);
    for bad in ["SIGFOO", "NOPE", "0", "65", "RTMIN+99"] {
        let o = lab.vk(&["kill", &id, bad]).fails();
        assert!(o.msg().contains("signal"), "{bad}: {}", o.stderr);
    }
    assert_eq!(lab.status(Rt::Ours, &id), "running");
    // A terminal without a console socket, detached.
    let mut cfg = lab.config(&b);
    cfg["process"]["terminal"] = json!(true);
    lab.write_config(&b, &cfg);
    let o = lab
        .vk(&["create", "--bundle", b.to_str().unwrap(), &lab.id("tty")])
        .fails();
    assert!(o.msg().contains("console"), "{}", o.stderr);
    // Everything refused above left nothing behind.
    assert_eq!(lab.vk(&["list", "-q"]).ok().stdout, format!("{id}\n"));
    lab.vk(&["delete", "-f", &id]).ok();
}
