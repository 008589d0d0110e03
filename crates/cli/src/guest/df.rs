//! virt-df: free space on each filesystem of a guest (df/output.c's layout).

use super::fmt::{csv_field, human};
use super::{parse, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};
use std::fmt::Write as _;
use virtkit_guest::fs::StatFs;

const USAGE: &str = "virt-df: display free space on virtual filesystems
Usage:
  virt-df [--options]
  virt-df [--options] -d domname
  virt-df [--options] -a disk.img [-a disk.img ...]
Options:
  -a|--add image       Add image
  --csv                Output as Comma-Separated Values
  --format[=raw|..]    Force disk format for -a option
  -h|--human-readable  Human-readable sizes in --long output
  --help               Display brief help
  -i|--inodes          Display inodes
  -V|--version         Display version and exit
For more information, see the manpage virt-df(1).
";

pub fn run(prog: &str, args: &[String]) -> Result<i32, String> {
    let long: &'static [(&'static str, bool)] = Box::leak(
        [
            COMMON_LONG,
            &[
                ("csv", false),
                ("human-readable", false),
                ("inodes", false),
                ("one-per-guest", false),
                ("uuid", false),
            ][..],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let spec = Spec {
        short: "a:c:d:hiP:vVx",
        long,
    };
    let mut c = Common::default();
    let (mut csv, mut hum, mut inodes) = (false, false, false);
    let Some(rest) = parse(prog, &spec, args, &mut c, USAGE, &mut |o| {
        match o {
            Opt::Long("csv", _) => csv = true,
            Opt::Short('h', _) | Opt::Long("human-readable", _) => hum = true,
            Opt::Long("inodes", _) => inodes = true,
            Opt::Long("one-per-guest" | "uuid", _) | Opt::Short('P', _) => {}
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(0);
    };
    // virt-df's -i is --inodes, not --inspector.
    if c.inspector {
        inodes = true;
        c.inspector = false;
    }
    if c.drives.is_empty() {
        for r in rest {
            c.drives.push((r.into(), None));
        }
    } else if !rest.is_empty() {
        return Err(format!("{prog}: error: extra argument ‘{}’ on the command line.\nMake sure to specify the argument for --format like '--format=%s'.", rest[0]));
    }
    if hum && csv {
        return Err(format!(
            "{prog}: you cannot use -h and --csv options together."
        ));
    }
    c.need_drives(prog)?;
    let g = c.launch()?;
    // Display name: the first disk's file name, one '+' per further disk.
    let first = &c.drives[0].0;
    let mut name = first
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| first.display().to_string());
    name.push_str(&"+".repeat(c.drives.len() - 1));
    let mut out = title(csv, hum, inodes);
    for (dev, info) in g.filesystems() {
        if matches!(info.kind.as_str(), "" | "swap" | "unknown") {
            continue;
        }
        // As virt-df: a filesystem that cannot be mounted is left out silently.
        let Ok(fs) = g.open_fs(&dev) else { continue };
        let Ok(st) = fs.statfs() else { continue };
        let dev = g.canonical_name(&dev).unwrap_or(dev);
        row(&mut out, &name, &dev, &st, csv, hum, inodes);
    }
    print!("{out}");
    Ok(0)
}

fn title(csv: bool, hum: bool, inodes: bool) -> String {
    let cols: [&str; 6] = if !inodes {
        [
            "VirtualMachine",
            "Filesystem",
            if hum { "Size" } else { "1K-blocks" },
            "Used",
            "Available",
            "Use%",
        ]
    } else {
        [
            "VirtualMachine",
            "Filesystem",
            "Inodes",
            "IUsed",
            "IFree",
            "IUse%",
        ]
    };
    if csv {
        let v: Vec<String> = cols.iter().map(|c| csv_field(c)).collect();
        format!("{}\n", v.join(","))
    } else {
        format!(
            "{:<36}{:>10} {:>10} {:>10} {:>5}\n",
            cols[1], cols[2], cols[3], cols[4], cols[5]
        )
    }
}

/// df's scale(): blocks of `from` bytes in units of `to` bytes.
fn scale(n: u64, from: u64, to: u64) -> u64 {
    if from >= to {
        n.saturating_mul(from / to)
    } else {
        n / (to / from.max(1))
    }
}

fn row(out: &mut String, name: &str, dev: &str, st: &StatFs, csv: bool, hum: bool, inodes: bool) {
    let (cols, percent): ([String; 3], f32) = if !inodes {
        let used = st.blocks.saturating_sub(st.bfree);
        let cols = if hum {
            [
                human(st.blocks, st.bsize),
                human(used, st.bsize),
                human(st.bavail, st.bsize),
            ]
        } else {
            [
                scale(st.blocks, st.bsize, 1024).to_string(),
                scale(used, st.bsize, 1024).to_string(),
                scale(st.bavail, st.bsize, 1024).to_string(),
            ]
        };
        let p = if st.blocks != 0 {
            100.0 - 100.0 * st.bfree as f32 / st.blocks as f32
        } else {
            0.0
        };
        (cols, p)
    } else {
        let p = if st.files != 0 {
            100.0 - 100.0 * st.ffree as f32 / st.files as f32
        } else {
            0.0
        };
        (
            [
                st.files.to_string(),
                st.files.saturating_sub(st.ffree).to_string(),
                st.ffree.to_string(),
            ],
            p,
        )
    };
    if csv {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.1}",
            csv_field(name),
            csv_field(dev),
            cols[0],
            cols[1],
            cols[2],
            percent as f64
        );
    } else {
        let pct = format!("{:3.0}%", (percent as f64).ceil());
        let lead = format!("{name}:{dev}");
        if lead.len() <= 36 {
            let _ = write!(out, "{lead:<36}");
        } else {
            let _ = write!(out, "{lead}\n{:36}", "");
        }
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>5}",
            cols[0], cols[1], cols[2], pct
        );
    }
}
