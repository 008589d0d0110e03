//! virtkit: one binary, many personalities. Invoked as `virtkit SUBCOMMAND ...` or through a
//! link named like a classic tool (`qemu-img`), it speaks that tool's command line.

mod ctr;
mod getopt;
mod guest;
mod img;
mod qjson;

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "\
virtkit: the Linux virtualization stack in one binary

Usage: virtkit <command> [args...]

Commands:
  img       disk images (qemu-img compatible: create, info, convert, check, resize,
            snapshot, compare, map, amend, bench, bitmap, commit, dd, measure,
            rebase; plus ova-import and ova-export)
  guest     guest disks without an appliance (libguestfs tools: ls, cat, copy-out,
            tar-out, filesystems, df, inspector, diff, guestfish), read-only
  ctr       OCI containers (runc compatible: create, start, run, exec, state, list,
            kill, delete, ps, pause, resume, events, update, spec, features; plus
            import of OCI layout / docker-archive images into bundles)
  help      this text
  version   print the version

Personalities: link or copy the binary under one of these names to get that tool's
command line, output and exit codes:
  qemu-img  (same as `virtkit img`)
  virt-ls, virt-cat, virt-copy-out, virt-tar-out, virt-filesystems, virt-df,
  virt-inspector, virt-diff, guestfish  (same as `virtkit guest ls`, ...)
  runc      (same as `virtkit ctr`; containerd and podman can use it as their runtime)
";

fn main() -> ExitCode {
    // Like the C tools we stand in for, die quietly of SIGPIPE when the reader of our output
    // goes away (`virtkit img map x | head`), instead of panicking in println! on EPIPE.
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The NTFS reader contains panics of the ntfs crate on malformed records (they become
    // "corrupt" errors); keep the default hook's message out of the user's way for those.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let from_ntfs_crate = info
            .location()
            .is_some_and(|l| l.file().contains("/ntfs-0."));
        if !from_ntfs_crate {
            default_hook(info);
        }
    }));
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let code = match argv0.as_str() {
        "qemu-img" => img::main("qemu-img", &args[1..]),
        "runc" => ctr::main("runc", &args[1..]),
        t if guest::TOOLS.contains(&t) => guest::main(t, &args[1..]),
        _ => match args.get(1).map(String::as_str) {
            Some("img") => img::main("virtkit", &args[2..]),
            Some("guest") => guest::main_native(&args[2..]),
            Some("ctr") => ctr::main("virtkit ctr", &args[2..]),
            Some("version" | "--version" | "-V") => {
                println!("virtkit {}", env!("CARGO_PKG_VERSION"));
                0
            }
            Some("help" | "--help" | "-h") | None => {
                print!("{USAGE}");
                if args.len() < 2 {
                    1
                } else {
                    0
                }
            }
            Some(other) => {
                eprintln!("virtkit: unknown command '{other}' (try 'virtkit help')");
                1
            }
        },
    };
    ExitCode::from(code as u8)
}
