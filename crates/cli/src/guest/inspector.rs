//! virt-inspector: the inspection report, in libguestfs' XML (same elements, order and
//! indentation as its libxml2 writer).

use super::{parse, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};
use std::fmt::Write as _;
use virtkit_guest::inspect::{self, Devices, OsInfo};

const USAGE: &str = "virt-inspector: display information about a virtual machine
Usage:
  virt-inspector [--options] -d domname
  virt-inspector [--options] -a disk.img [-a disk.img ...]
Options:
  -a|--add image       Add image
  --format[=raw|..]    Force disk format for -a option
  --help               Display brief help
  --no-applications    Do not output the installed applications
  --no-icon            Do not output the guest icon
  -V|--version         Display version and exit
For more information, see the manpage virt-inspector(1).
";

pub fn run(prog: &str, args: &[String]) -> Result<i32, String> {
    let long: &'static [(&'static str, bool)] = Box::leak(
        [
            COMMON_LONG,
            &[
                ("no-applications", false),
                ("no-icon", false),
                ("xpath", true),
            ][..],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let spec = Spec {
        short: "a:c:d:vVx",
        long,
    };
    let mut c = Common::default();
    let mut apps = true;
    let Some(rest) = parse(prog, &spec, args, &mut c, USAGE, &mut |o| {
        match o {
            Opt::Long("no-applications", _) => apps = false,
            Opt::Long("no-icon", _) => {}
            Opt::Long("xpath", _) => {
                return Err(format!(
                    "{prog}: error: --xpath is not supported; pipe the XML to xmllint --xpath"
                ))
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(0);
    };
    if c.drives.is_empty() {
        for r in rest {
            c.drives.push((r.into(), None));
        }
    } else if !rest.is_empty() {
        return Err(format!(
            "{prog}: error: extra argument ‘{}’ on the command line",
            rest[0]
        ));
    }
    c.need_drives(prog)?;
    let g = c.launch()?;
    let roots = inspect::inspect_os(&g as &dyn Devices);
    let mut x = String::from("<?xml version=\"1.0\"?>\n");
    if roots.is_empty() {
        x.push_str("<operatingsystems/>\n");
    } else {
        x.push_str("<operatingsystems>\n");
        for os in &roots {
            write_os(&mut x, &g, os, apps)?;
        }
        x.push_str("</operatingsystems>\n");
    }
    print!("{x}");
    Ok(0)
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            // Characters XML 1.0 cannot carry are dropped (a guest file may hold anything).
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

fn el(x: &mut String, indent: usize, name: &str, v: &str) {
    let _ = writeln!(x, "{:indent$}<{name}>{}</{name}>", "", esc(v));
}

fn write_os(
    x: &mut String,
    g: &virtkit_guest::Guest,
    os: &OsInfo,
    apps: bool,
) -> Result<(), String> {
    let known = |s: &str| !s.is_empty() && s != "unknown";
    x.push_str("  <operatingsystem>\n");
    el(x, 4, "root", &os.root);
    for (n, v) in [
        ("name", &os.os_type),
        ("arch", &os.arch),
        ("distro", &os.distro),
        ("product_name", &os.product_name),
    ] {
        if known(v) {
            el(x, 4, n, v);
        }
    }
    el(x, 4, "major_version", &os.major_version.to_string());
    el(x, 4, "minor_version", &os.minor_version.to_string());
    for (n, v) in [
        ("package_format", &os.package_format),
        ("package_management", &os.package_management),
        ("hostname", &os.hostname),
        ("osinfo", &os.osinfo),
    ] {
        if known(v) {
            el(x, 4, n, v);
        }
    }
    x.push_str("    <mountpoints>\n");
    for (dev, mp) in &os.mountpoints {
        let _ = writeln!(
            x,
            "      <mountpoint dev=\"{}\">{}</mountpoint>",
            esc(dev),
            esc(mp)
        );
    }
    x.push_str("    </mountpoints>\n");
    let probed = g.filesystems();
    x.push_str("    <filesystems>\n");
    for dev in &os.filesystems {
        let _ = writeln!(x, "      <filesystem dev=\"{}\">", esc(dev));
        if let Some((_, info)) = probed.iter().find(|(d, _)| d == dev) {
            if known(&info.kind) {
                el(x, 8, "type", &info.kind);
            }
            if let Some(l) = info.label.as_deref().filter(|l| !l.is_empty()) {
                el(x, 8, "label", l);
            }
            if let Some(u) = info.uuid.as_deref().filter(|u| !u.is_empty()) {
                el(x, 8, "uuid", u);
            }
        }
        x.push_str("      </filesystem>\n");
    }
    x.push_str("    </filesystems>\n");
    if apps {
        let m =
            inspect::mount_os(g as &dyn Devices, os).map_err(|e| super::api_err("mount_ro", &e))?;
        let list = inspect::applications(&m, os)
            .map_err(|e| super::api_err("inspect_list_applications2", &e))?;
        if list.is_empty() {
            x.push_str("    <applications/>\n");
        } else {
            x.push_str("    <applications>\n");
            for a in &list {
                x.push_str("      <application>\n");
                el(x, 8, "name", &a.name);
                if a.epoch != 0 {
                    el(x, 8, "epoch", &a.epoch.to_string());
                }
                for (n, v) in [
                    ("version", &a.version),
                    ("release", &a.release),
                    ("arch", &a.arch),
                    ("url", &a.url),
                    ("source_package", &a.source_package),
                    ("summary", &a.summary),
                    ("description", &a.description),
                ] {
                    if !v.is_empty() {
                        el(x, 8, n, v);
                    }
                }
                x.push_str("      </application>\n");
            }
            x.push_str("    </applications>\n");
        }
    }
    x.push_str("  </operatingsystem>\n");
    Ok(())
}
