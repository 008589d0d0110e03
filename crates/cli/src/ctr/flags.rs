//! Command-line flags the way runc's (urfave/cli v1) parser takes them: `-flag`, `--flag`,
//! `--flag=value`, `--flag value`, booleans with an optional `=true|false`, flags before the
//! positional arguments (the first non-flag ends them, as in runc).

pub struct Flag {
    pub names: &'static [&'static str],
    pub takes_value: bool,
}

pub const fn f(names: &'static [&'static str], takes_value: bool) -> Flag {
    Flag { names, takes_value }
}

#[derive(Default, Debug)]
pub struct Parsed {
    /// (canonical name = first name, value); booleans get "true"/"false".
    pub flags: Vec<(&'static str, String)>,
    pub args: Vec<String>,
}

impl Parsed {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v == "true")
    }
}

/// Parses `argv` against `spec`. With `stop_at_positional`, the first argument that is not a
/// flag ends flag parsing (runc's global flags, and commands that take a command line).
pub fn parse(argv: &[String], spec: &[Flag], stop_at_positional: bool) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--" {
            out.args.extend(argv[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            if stop_at_positional {
                out.args.extend(argv[i..].iter().cloned());
                break;
            }
            out.args.push(a.clone());
            i += 1;
            continue;
        }
        let body = a.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = spec.iter().find(|f| f.names.contains(&name)) else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let canon = flag.names[0];
        if flag.takes_value {
            let v = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    argv.get(i)
                        .cloned()
                        .ok_or_else(|| format!("flag needs an argument: -{name}"))?
                }
            };
            out.flags.push((canon, v));
        } else {
            let v = match inline.as_deref() {
                None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") => "true",
                Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") => "false",
                Some(o) => return Err(format!("invalid boolean value {o:?} for -{name}")),
            };
            out.flags.push((canon, v.to_string()));
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn runc_style() {
        let spec = [f(&["bundle", "b"], true), f(&["detach", "d"], false)];
        let p = parse(
            &s(&["-b", "x", "--detach", "id", "--bundle=y"]),
            &spec,
            false,
        )
        .unwrap();
        assert_eq!(p.get("bundle"), Some("y"));
        assert!(p.bool("detach"));
        assert_eq!(p.args, s(&["id"]));
        let p = parse(&s(&["id", "-d"]), &spec, true).unwrap();
        assert_eq!(p.args, s(&["id", "-d"]));
        assert!(parse(&s(&["--nope"]), &spec, false).is_err());
        assert!(parse(&s(&["--bundle"]), &spec, false).is_err());
        let p = parse(&s(&["--detach=false"]), &spec, false).unwrap();
        assert!(!p.bool("detach"));
    }
}
