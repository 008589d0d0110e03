//! getopt_long as qemu-img uses it: permuted arguments, clustered short options, `-fqcow2`,
//! `--opt=value` and `--opt value`, `--` ending options. Written by hand because the exact
//! acceptance and error texts matter to scripts written against qemu-img.

pub struct Spec {
    /// Short options, getopt style: "f:o:q" (a colon marks an argument).
    pub short: &'static str,
    /// Long options: (name, takes argument).
    pub long: &'static [(&'static str, bool)],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opt {
    Short(char, Option<String>),
    Long(&'static str, Option<String>),
}

pub struct Parsed {
    pub opts: Vec<Opt>,
    pub args: Vec<String>,
}

impl Spec {
    fn short_takes(&self, c: char) -> Option<bool> {
        let b = self.short.as_bytes();
        let i = b.iter().position(|&x| x as char == c && c != ':')?;
        Some(b.get(i + 1) == Some(&b':'))
    }

    pub fn parse(&self, argv: &[String]) -> Result<Parsed, String> {
        let mut opts = Vec::new();
        let mut args = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            i += 1;
            if a == "--" {
                args.extend(argv[i..].iter().cloned());
                break;
            }
            if let Some(l) = a.strip_prefix("--") {
                let (name, val) = match l.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (l, None),
                };
                // getopt_long accepts unambiguous prefixes.
                let exact = self.long.iter().find(|(n, _)| *n == name);
                let cands: Vec<_> = self
                    .long
                    .iter()
                    .filter(|(n, _)| n.starts_with(name))
                    .collect();
                let (lname, takes) = match (exact, cands.len()) {
                    (Some(e), _) => *e,
                    (None, 1) => *cands[0],
                    (None, 0) => return Err(format!("unrecognized option '--{name}'")),
                    _ => return Err(format!("option '--{name}' is ambiguous")),
                };
                if takes {
                    let v = match val {
                        Some(v) => v,
                        None => {
                            let v = argv.get(i).ok_or_else(|| {
                                format!("option '--{lname}' requires an argument")
                            })?;
                            i += 1;
                            v.clone()
                        }
                    };
                    opts.push(Opt::Long(lname, Some(v)));
                } else {
                    if val.is_some() {
                        return Err(format!("option '--{lname}' doesn't allow an argument"));
                    }
                    opts.push(Opt::Long(lname, None));
                }
                continue;
            }
            if a.len() > 1 && a.starts_with('-') {
                let chars: Vec<char> = a[1..].chars().collect();
                let mut j = 0;
                while j < chars.len() {
                    let c = chars[j];
                    j += 1;
                    match self.short_takes(c) {
                        None => return Err(format!("invalid option -- '{c}'")),
                        Some(false) => opts.push(Opt::Short(c, None)),
                        Some(true) => {
                            let v = if j < chars.len() {
                                chars[j..].iter().collect()
                            } else {
                                let v = argv.get(i).ok_or_else(|| {
                                    format!("option requires an argument -- '{c}'")
                                })?;
                                i += 1;
                                v.clone()
                            };
                            opts.push(Opt::Short(c, Some(v)));
                            break;
                        }
                    }
                }
                continue;
            }
            args.push(a.clone());
        }
        Ok(Parsed { opts, args })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }
    #[test]
    fn permutes_and_clusters() {
        let spec = Spec {
            short: "f:qp",
            long: &[("output", true), ("shrink", false)],
        };
        let p = spec
            .parse(&s(&[
                "a",
                "-qpfqcow2",
                "b",
                "--out=json",
                "--shrink",
                "--",
                "-c",
            ]))
            .unwrap();
        assert_eq!(p.args, s(&["a", "b", "-c"]));
        assert_eq!(p.opts[0], Opt::Short('q', None));
        assert_eq!(p.opts[2], Opt::Short('f', Some("qcow2".into())));
        assert_eq!(p.opts[3], Opt::Long("output", Some("json".into())));
        assert!(spec.parse(&s(&["-z"])).is_err());
        assert!(spec.parse(&s(&["-f"])).is_err());
    }
}
