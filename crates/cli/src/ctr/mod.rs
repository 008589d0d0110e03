//! `virtkit ctr` and the `runc` personality: runc's command line, output and exit codes over
//! the virtkit-oci runtime.

mod flags;
mod output;
mod tty;

use flags::{f, parse, Flag, Parsed};
use std::io::Write;
use std::path::{Path, PathBuf};
use virtkit_oci::container::{parse_signal, CreateOptions, ExecOptions, Runtime};
use virtkit_oci::{exe, spec, Error};

/// The version line `runc --version` prints; the spec line is what containerd reads.
const VERSION: &str = concat!(
    "runc version 1.1.5+virtkit-",
    env!("CARGO_PKG_VERSION"),
    "\ncommit: virtkit\nspec: 1.0.2-dev\ngo: none (virtkit is written in Rust)\nlibseccomp: none (seccomp compiled in Rust)"
);

const USAGE: &str = "\
NAME:
   runc - Open Container Initiative runtime (virtkit)

USAGE:
   runc [global options] command [command options] [arguments...]

COMMANDS:
   checkpoint  checkpoint a running container (needs criu)
   create      create a container
   delete      delete any resources held by the container often used with detached container
   events      display container events such as OOM notifications, cpu, memory, and IO usage statistics
   exec        execute new process inside the container
   kill        kill sends the specified signal (default: SIGTERM) to the container's init process
   list        lists containers started by runc with the given root
   pause       pause suspends all processes inside the container
   ps          ps displays the processes running inside a container
   restore     restore a container from a previous checkpoint (needs criu)
   resume      resumes all processes that have been previously paused
   run         create and run a container
   spec        create a new specification file
   start       executes the user defined process in a created container
   state       output the state of a container
   update      update container resource constraints
   features    show the enabled features
   import      (virtkit) import an OCI layout or docker-archive image into a bundle
   help, h     Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --debug             enable debug logging
   --log value         set the log file to write runc logs to (default is '/dev/stderr')
   --log-format value  set the log format ('text' (default), or 'json') (default: \"text\")
   --root value        root directory for storage of container state (default: \"/run/virtkit/runc\")
   --systemd-cgroup    enable systemd cgroup support (no systemd: refused with a message)
   --rootless value    ignore cgroup permission errors ('true', 'false', or 'auto') (default: \"auto\")
   --help, -h          show help
   --version, -v       print the version
";

const GLOBAL: &[Flag] = &[
    f(&["debug"], false),
    f(&["log"], true),
    f(&["log-format"], true),
    f(&["root"], true),
    f(&["criu"], true),
    f(&["systemd-cgroup"], false),
    f(&["rootless"], true),
    f(&["help", "h"], false),
    f(&["version", "v"], false),
];

/// Where errors go: runc logs them (logrus text or JSON, to --log or stderr) and, when the
/// log is a file, also prints the bare message on stderr. containerd reads the JSON log.
struct Log {
    file: Option<PathBuf>,
    json: bool,
    native: bool,
}

impl Log {
    fn error(&self, msg: &str) {
        let time = virtkit_oci::state::now_rfc3339();
        let time = format!("{}Z", &time[..19]);
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            format!("time={time:?} level=error msg={msg:?}")
        };
        match &self.file {
            Some(p) if p != Path::new("/dev/stderr") => {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                {
                    let _ = writeln!(f, "{line}");
                }
                eprintln!("{msg}");
            }
            _ if self.native => eprintln!("virtkit ctr: {msg}"),
            _ => eprintln!("{line}"),
        }
    }
}

fn default_root() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/run/virtkit/runc")
    } else {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        base.join("virtkit/runc")
    }
}

pub fn main(personality: &str, argv: &[String]) -> i32 {
    let native = personality != "runc";
    let g = match parse(argv, GLOBAL, true) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let log = Log {
        file: g.get("log").map(PathBuf::from),
        json: g.get("log-format") == Some("json"),
        native,
    };
    if let Some(fmt) = g.get("log-format") {
        if fmt != "json" && fmt != "text" {
            log.error(&format!("invalid log-format: {fmt}"));
            return 1;
        }
    }
    if g.bool("version") {
        println!("{VERSION}");
        return 0;
    }
    let Some(cmd) = g.args.first().cloned() else {
        print!("{USAGE}");
        return 0;
    };
    if g.bool("help") || cmd == "help" || cmd == "h" {
        print!("{USAGE}");
        return 0;
    }
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let rootless = match g.get("rootless").unwrap_or("auto") {
        "true" => true,
        "false" => false,
        _ => euid != 0,
    };
    if g.bool("systemd-cgroup") && !pid1_is_systemd() {
        log.error("--systemd-cgroup: systemd is not running on this host (PID 1 is not systemd); use cgroupfs (drop the flag)");
        return 1;
    }
    let rt = Runtime {
        root: g
            .get("root")
            .map(PathBuf::from)
            .unwrap_or_else(default_root),
        systemd_cgroup: g.bool("systemd-cgroup"),
        rootless,
    };
    let rest = &g.args[1..];
    match command(&rt, &cmd, rest) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e);
            // runc's exec fails with 255, so that a caller can tell its failure from the
            // exit code of the process it ran.
            if e.starts_with(EXEC_FAILED) {
                255
            } else {
                1
            }
        }
    }
}

fn pid1_is_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn one_id(p: &Parsed, cmd: &str) -> Result<String, String> {
    match p.args.first() {
        Some(id) if !id.is_empty() => Ok(id.clone()),
        _ => Err(format!(
            "{cmd}: \"{cmd}\" requires a minimum of 1 argument (the container id)"
        )),
    }
}

fn err(e: Error) -> String {
    e.to_string()
}

const CREATE_FLAGS: &[Flag] = &[
    f(&["bundle", "b"], true),
    f(&["console-socket"], true),
    f(&["pid-file"], true),
    f(&["no-pivot"], false),
    f(&["no-new-keyring"], false),
    f(&["preserve-fds"], true),
    f(&["detach", "d"], false),
    f(&["keep"], false),
    f(&["no-subreaper"], false),
];

fn create_options(p: &Parsed, id: String) -> Result<CreateOptions, String> {
    let bundle = p
        .get("bundle")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(CreateOptions {
        id,
        bundle,
        pid_file: p.get("pid-file").map(absolute),
        console_socket: p.get("console-socket").map(absolute),
        no_pivot: p.bool("no-pivot"),
        no_new_keyring: p.bool("no-new-keyring"),
        preserve_fds: match p.get("preserve-fds") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("invalid value {v:?} for flag -preserve-fds"))?,
            None => 0,
        },
    })
}

fn absolute(s: &str) -> PathBuf {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn command(rt: &Runtime, cmd: &str, argv: &[String]) -> Result<i32, String> {
    match cmd {
        "create" => {
            let p = parse(argv, CREATE_FLAGS, false)?;
            let id = one_id(&p, "create")?;
            let o = create_options(&p, id)?;
            exe::ensure_sealed().map_err(|e| format!("sealing the runtime binary: {e}"))?;
            rt.create(&o).map_err(err)?;
            Ok(0)
        }
        "run" => {
            let p = parse(argv, CREATE_FLAGS, false)?;
            let id = one_id(&p, "run")?;
            let o = create_options(&p, id)?;
            exe::ensure_sealed().map_err(|e| format!("sealing the runtime binary: {e}"))?;
            rt.run(&o, p.bool("detach"), Some(&mut tty::relay))
                .map_err(err)
        }
        "start" => {
            let p = parse(argv, &[], false)?;
            rt.start(&one_id(&p, "start")?).map_err(err)?;
            Ok(0)
        }
        "state" => {
            let p = parse(argv, &[], false)?;
            let mut st = rt.state(&one_id(&p, "state")?).map_err(err)?;
            st.owner = String::new();
            print!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            Ok(0)
        }
        "list" | "ps" if cmd == "list" => {
            let p = parse(
                argv,
                &[f(&["format", "f"], true), f(&["quiet", "q"], false)],
                false,
            )?;
            let list = rt.list().map_err(err)?;
            output::list(&list, p.get("format").unwrap_or("table"), p.bool("quiet"))?;
            Ok(0)
        }
        "kill" => {
            let p = parse(argv, &[f(&["all", "a"], false)], false)?;
            let id = one_id(&p, "kill")?;
            let sig = parse_signal(p.args.get(1).map(String::as_str).unwrap_or("SIGTERM"))
                .map_err(err)?;
            rt.kill(&id, sig, p.bool("all")).map_err(err)?;
            Ok(0)
        }
        "delete" => {
            let p = parse(argv, &[f(&["force", "f"], false)], false)?;
            let id = one_id(&p, "delete")?;
            match rt.delete(&id, p.bool("force")) {
                Ok(()) => Ok(0),
                // Like runc: deleting what is not there is an error (containerd ignores it).
                Err(e) => Err(err(e)),
            }
        }
        "pause" => {
            let p = parse(argv, &[], false)?;
            rt.pause(&one_id(&p, "pause")?).map_err(err)?;
            Ok(0)
        }
        "resume" => {
            let p = parse(argv, &[], false)?;
            rt.resume(&one_id(&p, "resume")?).map_err(err)?;
            Ok(0)
        }
        "ps" => {
            let p = parse(argv, &[f(&["format", "f"], true)], true)?;
            let id = one_id(&p, "ps")?;
            let pids = rt.pids(&id).map_err(err)?;
            output::ps(&pids, p.get("format").unwrap_or("table"), &p.args[1..])?;
            Ok(0)
        }
        "exec" => exec(rt, argv),
        "events" => {
            let p = parse(argv, &[f(&["stats"], false), f(&["interval"], true)], false)?;
            let id = one_id(&p, "events")?;
            let interval = match p.get("interval") {
                Some(v) => output::parse_duration(v)?,
                None => std::time::Duration::from_secs(5),
            };
            output::events(rt, &id, p.bool("stats"), interval)
        }
        "update" => update(rt, argv),
        "spec" => {
            let p = parse(
                argv,
                &[f(&["bundle", "b"], true), f(&["rootless"], false)],
                false,
            )?;
            let dir = PathBuf::from(p.get("bundle").unwrap_or("."));
            let path = dir.join("config.json");
            if path.exists() {
                return Err(format!("File {} exists. Remove it first", path.display()));
            }
            let text = spec::template(
                p.bool("rootless"),
                // SAFETY: cannot fail.
                unsafe { libc::geteuid() },
                // SAFETY: cannot fail.
                unsafe { libc::getegid() },
            );
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(0)
        }
        "features" => {
            print!("{}", output::features());
            Ok(0)
        }
        "checkpoint" | "restore" => {
            if which("criu") {
                Err(format!("{cmd}: not supported by virtkit yet (criu is installed, but the checkpoint image handling is not written)"))
            } else {
                Err(format!("{cmd}: not supported: criu is not installed (apt-get install criu), and virtkit does not implement checkpointing without it"))
            }
        }
        "import" => import(argv),
        other => Err(format!("No help topic for '{other}'")),
    }
}

fn which(prog: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(prog).is_file())
}

const EXEC_FLAGS: &[Flag] = &[
    f(&["console-socket"], true),
    f(&["cwd"], true),
    f(&["env", "e"], true),
    f(&["tty", "t"], false),
    f(&["user", "u"], true),
    f(&["additional-gids", "g"], true),
    f(&["process", "p"], true),
    f(&["detach", "d"], false),
    f(&["pid-file"], true),
    f(&["process-label"], true),
    f(&["apparmor"], true),
    f(&["no-new-privs"], false),
    f(&["cap", "c"], true),
    f(&["preserve-fds"], true),
    f(&["cgroup"], true),
    f(&["ignore-paused"], false),
];

fn exec(rt: &Runtime, argv: &[String]) -> Result<i32, String> {
    let p = parse(argv, EXEC_FLAGS, true)?;
    let id = one_id(&p, "exec")?;
    let (_dir, saved) = rt.open(&id).map_err(exec_failed)?;
    let mut process = match p.get("process") {
        Some(file) => {
            let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            serde_json::from_slice::<oci_spec::runtime::Process>(&data)
                .map_err(|e| format!("{file}: {e}"))?
        }
        None => {
            let args = p.args[1..].to_vec();
            if args.is_empty() {
                return Err(
                    "exec: arguments required after the container id (or -p process.json)".into(),
                );
            }
            let mut proc = saved
                .spec()
                .map_err(err)?
                .process()
                .clone()
                .unwrap_or_default();
            proc.set_args(Some(args));
            proc
        }
    };
    drop(_dir);
    if p.get("process").is_none() {
        if let Some(cwd) = p.get("cwd") {
            process.set_cwd(PathBuf::from(cwd));
        }
        let mut env = process.env().clone().unwrap_or_default();
        for e in p.all("env") {
            let key = e.split('=').next().unwrap_or("").to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            env.push(e);
        }
        process.set_env(Some(env));
        if let Some(u) = p.get("user") {
            let (uid, gid) = match u.split_once(':') {
                Some((a, b)) => (a, Some(b)),
                None => (u, None),
            };
            let mut user = process.user().clone();
            user.set_uid(
                uid.parse()
                    .map_err(|_| format!("invalid user {u:?} (uid[:gid] numbers)"))?,
            );
            if let Some(g) = gid {
                user.set_gid(
                    g.parse()
                        .map_err(|_| format!("invalid user {u:?} (uid[:gid] numbers)"))?,
                );
            }
            process.set_user(user);
        }
        let gids = p.all("additional-gids");
        if !gids.is_empty() {
            let mut user = process.user().clone();
            let v: Result<Vec<u32>, _> = gids.iter().map(|g| g.parse::<u32>()).collect();
            user.set_additional_gids(Some(
                v.map_err(|_| "invalid --additional-gids".to_string())?,
            ));
            process.set_user(user);
        }
        if p.bool("no-new-privs") {
            process.set_no_new_privileges(Some(true));
        }
        let caps = p.all("cap");
        if !caps.is_empty() {
            let mut c = process.capabilities().clone().unwrap_or_default();
            for name in caps {
                let cap: oci_spec::runtime::Capability =
                    serde_json::from_value(serde_json::Value::String(name.clone()))
                        .map_err(|_| format!("unknown capability {name:?}"))?;
                for set in [
                    c.bounding().clone(),
                    c.effective().clone(),
                    c.permitted().clone(),
                ]
                .iter_mut()
                .enumerate()
                {
                    let mut s = set.1.clone().unwrap_or_default();
                    s.insert(cap);
                    match set.0 {
                        0 => c.set_bounding(Some(s)),
                        1 => c.set_effective(Some(s)),
                        _ => c.set_permitted(Some(s)),
                    };
                }
            }
            process.set_capabilities(Some(c));
        }
    }
    process.set_terminal(Some(
        p.bool("tty") || (p.get("process").is_some() && process.terminal().unwrap_or(false)),
    ));
    let o = ExecOptions {
        process,
        console_socket: p.get("console-socket").map(absolute),
        pid_file: p.get("pid-file").map(absolute),
        detach: p.bool("detach"),
        preserve_fds: match p.get("preserve-fds") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("invalid value {v:?} for -preserve-fds"))?,
            None => 0,
        },
    };
    exe::ensure_sealed().map_err(|e| format!("sealing the runtime binary: {e}"))?;
    rt.exec(&id, &o, Some(&mut tty::relay)).map_err(exec_failed)
}

const EXEC_FAILED: &str = "exec failed: ";

fn exec_failed(e: Error) -> String {
    format!("{EXEC_FAILED}{e}")
}

fn update(rt: &Runtime, argv: &[String]) -> Result<i32, String> {
    let p = parse(
        argv,
        &[
            f(&["resources", "r"], true),
            f(&["blkio-weight"], true),
            f(&["cpu-period"], true),
            f(&["cpu-quota"], true),
            f(&["cpu-share"], true),
            f(&["cpu-rt-period"], true),
            f(&["cpu-rt-runtime"], true),
            f(&["cpuset-cpus"], true),
            f(&["cpuset-mems"], true),
            f(&["kernel-memory"], true),
            f(&["kernel-memory-tcp"], true),
            f(&["memory"], true),
            f(&["memory-reservation"], true),
            f(&["memory-swap"], true),
            f(&["pids-limit"], true),
            f(&["l3-cache-schema"], true),
            f(&["mem-bw-schema"], true),
        ],
        false,
    )?;
    let id = one_id(&p, "update")?;
    let r = output::resources_from_flags(&p)?;
    rt.update(&id, &r).map_err(err)?;
    Ok(0)
}

/// `import SOURCE BUNDLE`: an OCI image layout (directory or tar) or a docker-archive tar
/// into a bundle whose rootfs is an overlay over the shared layer store.
fn import(argv: &[String]) -> Result<i32, String> {
    use virtkit_oci::image;
    let p = parse(
        argv,
        &[
            f(&["ref", "r"], true),
            f(&["store"], true),
            f(&["no-mount"], false),
            f(&["entrypoint"], true),
            f(&["env", "e"], true),
            f(&["user", "u"], true),
            f(&["cwd", "w"], true),
            f(&["quiet", "q"], false),
        ],
        false,
    )?;
    let [source, bundle, cmd @ ..] = p.args.as_slice() else {
        return Err(
            "usage: import [--ref NAME] [--store DIR] [--no-mount] [--entrypoint CMD] \
                    [-e K=V] [-u USER] [-w DIR] SOURCE BUNDLE [CMD ARG...]"
                .into(),
        );
    };
    let opts = image::ImportOptions {
        store: p
            .get("store")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(image::DEFAULT_STORE)),
        reference: p.get("ref").map(str::to_string),
        mount: !p.bool("no-mount"),
    };
    let over = image::Overrides {
        entrypoint: p
            .get("entrypoint")
            .map(|e| e.split_whitespace().map(str::to_string).collect()),
        cmd: (!cmd.is_empty()).then(|| cmd.to_vec()),
        env: p.all("env"),
        user: p.get("user").map(str::to_string),
        cwd: p.get("cwd").map(str::to_string),
    };
    let r = image::import_with(Path::new(source), Path::new(bundle), &opts, &over)
        .map_err(|e| e.to_string())?;
    if !p.bool("quiet") {
        println!("imported {} into {}", r.image, r.bundle.display());
        for l in &r.layers {
            println!(
                "  layer {} {} ({} bytes)",
                l.diff_id,
                if l.reused { "shared" } else { "unpacked" },
                l.size
            );
        }
        for n in &r.notes {
            println!("  note: {n}");
        }
    }
    Ok(0)
}
