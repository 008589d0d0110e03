//! The image config's `User` ("uid", "uid:gid", "name", "name:group", "uid:group",
//! "name:gid") resolved against the image's own `/etc/passwd` and `/etc/group`, as
//! conversion.md asks: numeric values are taken verbatim, names must exist, and supplementary
//! groups come from `/etc/group` membership only when a user name and no group was given.

use super::merged::MergedView;
use super::ImageError;

/// Largest passwd/group file read.
const MAX_DB: u64 = 8 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, when the user is listed there.
    pub home: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// `name:passwd:uid:gid:gecos:home:shell` lines; malformed lines are skipped (as libc does).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() || l.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// `name:passwd:gid:member,member` lines.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() || l.starts_with('#') {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `user` with the given databases (None: the file is missing in the image).
pub fn resolve(
    user: &str,
    passwd: Option<&[PasswdEntry]>,
    group: Option<&[GroupEntry]>,
) -> Result<ResolvedUser, ImageError> {
    let err = |msg: String| ImageError::User {
        user: user.to_string(),
        msg,
    };
    let user_trim = user.trim();
    if user_trim.is_empty() {
        let home = passwd
            .and_then(|p| p.iter().find(|e| e.uid == 0))
            .map(|e| e.home.clone());
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home,
        });
    }
    let (u, g) = match user_trim.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user_trim, None),
    };
    if u.is_empty() {
        return Err(err("no user before ':'".into()));
    }
    let numeric_user = u.parse::<u32>().ok();
    let entry = match numeric_user {
        Some(uid) => passwd.and_then(|p| p.iter().find(|e| e.uid == uid)),
        None => {
            let p = passwd
                .ok_or_else(|| err("the image has no /etc/passwd to look the name up in".into()))?;
            Some(
                p.iter()
                    .find(|e| e.name == u)
                    .ok_or_else(|| err(format!("no user {u:?} in the image's /etc/passwd")))?,
            )
        }
    };
    let uid = numeric_user.or(entry.map(|e| e.uid)).unwrap_or(0);
    let gid = match g {
        Some("") => return Err(err("no group after ':'".into())),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let gr = group.ok_or_else(|| {
                    err("the image has no /etc/group to look the group up in".into())
                })?;
                gr.iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?
                    .gid
            }
        },
        // A uid not in passwd runs with gid 0, as docker does.
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut additional_gids = Vec::new();
    if numeric_user.is_none() && g.is_none() {
        for gr in group.unwrap_or_default() {
            if gr.members.iter().any(|m| m == u) && !additional_gids.contains(&gr.gid) {
                additional_gids.push(gr.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

/// Resolves `user` against the `/etc/passwd` and `/etc/group` of the merged layers.
pub fn resolve_in(view: &MergedView, user: &str) -> Result<ResolvedUser, ImageError> {
    let read = |p: &str| -> Result<Option<String>, ImageError> {
        let b = view.read_file(p, MAX_DB).map_err(|e| ImageError::User {
            user: user.to_string(),
            msg: format!("reading the image's {p}: {e}"),
        })?;
        Ok(b.map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let passwd = read("/etc/passwd")?.map(|t| parse_passwd(&t));
    let group = read("/etc/group")?.map(|t| parse_group(&t));
    resolve(user, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbad\n",
        );
        let g = parse_group("root:x:0:\napp:x:1001:\nwheel:x:10:app,root\naudio:x:29:app\n");
        let r = |u: &str| resolve(u, Some(&p), Some(&g));
        assert_eq!(r("app").unwrap().uid, 1000);
        assert_eq!(r("app").unwrap().gid, 1001);
        assert_eq!(r("app").unwrap().additional_gids, vec![10, 29]);
        assert_eq!(r("app").unwrap().home.as_deref(), Some("/home/app"));
        assert_eq!(r("1000").unwrap().additional_gids, Vec::<u32>::new());
        assert_eq!(r("1000").unwrap().gid, 1001);
        assert_eq!(r("4242").unwrap().gid, 0);
        assert_eq!(r("app:audio").unwrap().gid, 29);
        assert!(r("app:audio").unwrap().additional_gids.is_empty());
        assert_eq!(
            r("5:7").unwrap(),
            ResolvedUser {
                uid: 5,
                gid: 7,
                additional_gids: vec![],
                home: None
            }
        );
        assert!(r("nobody").is_err());
        assert!(r("app:nogroup").is_err());
        assert!(r(":1").is_err());
        assert!(resolve("app", None, None).is_err());
        assert_eq!(r("").unwrap().uid, 0);
    }
}
