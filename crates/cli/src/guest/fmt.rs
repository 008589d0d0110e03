//! Output helpers shared by the libguestfs-style tools: gnulib's human_readable as the tools
//! call it, their CSV quoting, `ls -la` as the appliance prints it, and `find`'s order.

use crate::getopt::Opt;
use std::fmt::Write as _;
use virtkit_guest::fs::{FileType, Stat};
use virtkit_guest::mounts::{Mounts, Node};
use virtkit_guest::Result;

/// gnulib human_readable(n * from, human_round_to_nearest | human_autoscale |
/// human_base_1024 | human_SI): "512", "1.5K", "12M", "1.0G".
pub fn human(n: u64, from: u64) -> String {
    let bytes = n as u128 * from.max(1) as u128;
    if bytes < 1024 {
        return bytes.to_string();
    }
    const UNITS: &[u8] = b"KMGTPEZYRQ";
    let mut v = bytes as f64;
    let mut e = 0usize;
    while v >= 1024.0 && e < UNITS.len() {
        v /= 1024.0;
        e += 1;
    }
    // One decimal below 10, rounded to nearest; a rounding that reaches the next unit moves
    // up (1023.9K -> 1.0M), as gnulib does.
    if v < 10.0 {
        let t = (v * 10.0).round() / 10.0;
        if t < 10.0 {
            return format!("{t:.1}{}", UNITS[e - 1] as char);
        }
        return format!("10{}", UNITS[e - 1] as char);
    }
    let r = v.round();
    if r >= 1024.0 && e < UNITS.len() {
        return format!("1.0{}", UNITS[e] as char);
    }
    format!("{r:.0}{}", UNITS[e - 1] as char)
}

/// CSV quoting of the libguestfs tools: quoted only when the field holds a space, a quote,
/// a newline or a comma; quotes doubled.
pub fn csv_field(s: &str) -> String {
    if !s.contains([' ', '"', '\n', ',']) {
        return s.to_string();
    }
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// "drwxr-xr-x" from st_mode.
pub fn mode_string(mode: u32) -> String {
    let t = match FileType::from_mode(mode) {
        FileType::Regular => '-',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        FileType::Unknown => '?',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: bool, special: bool, set: char, unset_x: char| match (special, x) {
        (true, true) => set,
        (true, false) => unset_x,
        (false, true) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(mode & 0o100 != 0, mode & 0o4000 != 0, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(mode & 0o010 != 0, mode & 0o2000 != 0, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(mode & 0o001 != 0, mode & 0o1000 != 0, 't', 'T'));
    s
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// "2024-05-01 12:34:56" (UTC: the tools run with TZ unset in the appliance and here).
pub fn datetime(sec: i64) -> String {
    let (y, m, d) = civil(sec.div_euclid(86400));
    let s = sec.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// GNU ls' default time column: "Nov 26 20:53" within six months of now, else
/// "Nov 26  2024".
pub fn ls_time(sec: i64, now: i64) -> String {
    let (y, m, d) = civil(sec.div_euclid(86400));
    let s = sec.rem_euclid(86400);
    let six_months = 31_556_952 / 2;
    let mon = MONTHS[(m - 1) as usize];
    if sec > now - six_months && sec <= now + 60 {
        format!("{mon} {d:>2} {:02}:{:02}", s / 3600, s / 60 % 60)
    } else {
        format!("{mon} {d:>2}  {y}")
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn owner(id: u32) -> String {
    // The appliance's passwd and group files know only root.
    if id == 0 {
        "root".into()
    } else {
        id.to_string()
    }
}

/// `ls -la DIR` as the libguestfs appliance prints it (guestfs_ll): "total", then ".", ".."
/// and the entries sorted bytewise, columns padded to the widest value.
pub fn ll(m: &Mounts, dir: &str) -> Result<String> {
    let now = now();
    let node = m.resolve(dir, true)?;
    let entries = m.read_dir_node(node, dir)?;
    let mut rows: Vec<(Vec<u8>, Stat, Option<Vec<u8>>)> = Vec::with_capacity(entries.len() + 2);
    rows.push((b".".to_vec(), m.stat_node(node)?, None));
    let parent = if dir.trim_end_matches('/').is_empty() {
        "/".to_string()
    } else {
        format!("{}/..", dir.trim_end_matches('/'))
    };
    rows.push((b"..".to_vec(), m.stat(&parent)?, None));
    for e in &entries {
        let c = m.child(dir, node, e);
        let st = m.stat_node(c)?;
        let link = if st.kind == FileType::Symlink {
            Some(m.fs(c).readlink(c.ino)?)
        } else {
            None
        };
        rows.push((e.name.clone(), st, link));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let total: u64 = rows.iter().map(|r| r.1.blocks.div_ceil(2)).sum();
    let size_col = |st: &Stat| {
        if matches!(st.kind, FileType::CharDevice | FileType::BlockDevice) {
            let (ma, mi) = dev_split(st.rdev);
            format!("{ma}, {mi:>3}")
        } else {
            st.size.to_string()
        }
    };
    let wl = rows
        .iter()
        .map(|r| r.1.nlink.to_string().len())
        .max()
        .unwrap_or(1);
    let wu = rows.iter().map(|r| owner(r.1.uid).len()).max().unwrap_or(1);
    let wg = rows.iter().map(|r| owner(r.1.gid).len()).max().unwrap_or(1);
    let ws = rows.iter().map(|r| size_col(&r.1).len()).max().unwrap_or(1);
    let mut out = format!("total {total}\n");
    for (name, st, link) in &rows {
        let _ = write!(
            out,
            "{} {:>wl$} {:<wu$} {:<wg$} {:>ws$} {} {}",
            mode_string(st.mode),
            st.nlink,
            owner(st.uid),
            owner(st.gid),
            size_col(st),
            ls_time(st.mtime.sec, now),
            String::from_utf8_lossy(name),
        );
        if let Some(l) = link {
            let _ = write!(out, " -> {}", String::from_utf8_lossy(l));
        }
        out.push('\n');
    }
    Ok(out)
}

/// Linux's dev_t split (glibc gnu_dev_major/minor).
pub fn dev_split(d: u64) -> (u64, u64) {
    let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
    let minor = (d & 0xff) | ((d >> 12) & !0xff);
    (major, minor)
}

/// `find DIR` as guestfs_find returns it: every path below DIR relative to it, without
/// "./", sorted bytewise.
pub fn find(m: &Mounts, dir: &str) -> Result<Vec<String>> {
    let base = dir.trim_end_matches('/');
    let mut v = Vec::new();
    m.walk(dir, &mut |p: &str, _st: &Stat, _n: Node| {
        let rel = p
            .strip_prefix(base)
            .unwrap_or(p)
            .trim_start_matches('/')
            .to_string();
        v.push(rel);
        Ok(())
    })?;
    v.sort();
    Ok(v)
}

/// Which columns a virt-ls -lR or virt-diff line carries (the options both tools share).
#[derive(Default)]
pub struct Columns {
    pub csv: bool,
    pub human: bool,
    pub uids: bool,
    pub times: bool,
    /// virt-diff leaves atime out unless --atime; virt-ls always shows it with --times.
    pub atime: bool,
    /// 0: dates, 1: --time-t, 2: --time-relative, 3: --time-days
    pub time_mode: u8,
    pub extra: bool,
    /// --checksum[=TYPE]: the digest of regular files.
    pub checksum: Option<String>,
}

impl Columns {
    /// Takes one of the options virt-ls and virt-diff share; false for any other.
    pub fn take(&mut self, o: &Opt) -> bool {
        match o {
            Opt::Short('h', _) | Opt::Long("human-readable", _) => self.human = true,
            Opt::Long("csv", _) => self.csv = true,
            Opt::Long("uid" | "uids", _) => self.uids = true,
            Opt::Long("time" | "times", _) => self.times = true,
            Opt::Long("time-t", _) => (self.times, self.time_mode) = (true, 1),
            Opt::Long("time-relative", _) => (self.times, self.time_mode) = (true, 2),
            Opt::Long("time-days", _) => (self.times, self.time_mode) = (true, 3),
            Opt::Long("extra-stat" | "extra-stats", _) => self.extra = true,
            Opt::Long("checksum" | "checksums", v) => {
                self.checksum = Some(match v.as_deref() {
                    None | Some("") => "md5".to_string(),
                    Some(s) => s.to_string(),
                })
            }
            _ => return false,
        }
        true
    }
}

/// The leading columns of a virt-ls -lR / virt-diff line, padded as the C tools' output_*
/// functions pad them (uids and times padded even in CSV): type, perms, size, then uid/gid,
/// times and the extra stats when enabled.
pub fn stat_columns(st: &Stat, c: &Columns, now: i64) -> Vec<String> {
    let t = match st.kind {
        FileType::Regular => "-",
        FileType::Directory => "d",
        FileType::CharDevice => "c",
        FileType::BlockDevice => "b",
        FileType::Fifo => "p",
        FileType::Symlink => "l",
        FileType::Socket => "s",
        FileType::Unknown => "u",
    };
    let mut v = vec![t.to_string(), format!("{:04o}", st.mode & 0o7777)];
    let size = if c.human {
        human(st.size, 1)
    } else {
        st.size.to_string()
    };
    v.push(if c.csv { size } else { format!("{size:>10}") });
    if c.uids {
        v.push(format!("{:>4}", st.uid));
        v.push(format!("{:>4}", st.gid));
    }
    if c.times {
        let mut ts = vec![st.mtime.sec, st.ctime.sec];
        if c.atime {
            ts.insert(0, st.atime.sec);
        }
        for t in ts {
            v.push(match c.time_mode {
                1 => format!("{t:>10}"),
                2 => format!("{:>8}", now - t),
                3 => format!("{:>3}", (now - t) / 86400),
                _ => datetime(t),
            });
        }
    }
    if c.extra {
        // st_dev: the appliance's device numbers mean nothing outside it; 0:0 here.
        v.push("0:0".into());
        v.push(st.ino.to_string());
        v.push(st.nlink.to_string());
        let (ma, mi) = dev_split(st.rdev);
        v.push(format!("{ma}:{mi}"));
        v.push(st.blocks.to_string());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_like_gnulib() {
        assert_eq!(human(0, 1), "0");
        assert_eq!(human(1023, 1), "1023");
        assert_eq!(human(1024, 1), "1.0K");
        assert_eq!(human(1536, 1), "1.5K");
        assert_eq!(human(10 * 1024, 1), "10K");
        assert_eq!(human(1_048_575, 1), "1.0M");
        assert_eq!(human(262_144, 4096), "1.0G");
        assert_eq!(human(5 << 20, 1), "5.0M");
    }

    #[test]
    fn modes_times_and_quoting() {
        assert_eq!(mode_string(0o40755), "drwxr-xr-x");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o41777), "drwxrwxrwt");
        assert_eq!(mode_string(0o102644), "-rw-r-Sr--");
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        assert_eq!(datetime(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(ls_time(1_700_000_000, 1_700_000_100), "Nov 14 22:13");
        assert_eq!(ls_time(1_600_000_000, 1_700_000_000), "Sep 13  2020");
        assert_eq!(csv_field("a b"), "\"a b\"");
        assert_eq!(csv_field("q\"x"), "\"q\"\"x\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(dev_split((8 << 8) | 1), (8, 1));
    }
}
