//! The LVM2 text metadata format (libdm's config syntax as LVM writes it): sections
//! `name { ... }`, assignments `key = value` where a value is an integer, a quoted string or
//! a flat list `[ v, v, ... ]`, and `#` comments.
//!
//! Written by hand: no crate parses this format, and the input is hostile. The parser is
//! iterative (an explicit stack, nesting capped at [`MAX_DEPTH`]), and the caller bounds the
//! input by the metadata area's size; every node costs at least one input byte.

use crate::error::{Error, Result};

/// Deepest section nesting accepted (LVM writes 4 levels: VG, logical_volumes, LV, segment).
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: String,
    pub values: Vec<(String, Value)>,
    pub sections: Vec<Section>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// A non-negative integer.
    pub fn uint(&self, key: &str) -> Option<u64> {
        self.int(key).and_then(|i| u64::try_from(i).ok())
    }
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// A list of strings (status flags); None when absent or not such a list.
    pub fn strs(&self, key: &str) -> Option<Vec<&str>> {
        match self.get(key) {
            Some(Value::List(l)) => l
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    Eq,
    End,
}

struct Lexer<'a> {
    s: &'a [u8],
    at: usize,
    line: usize,
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-')
}

impl Lexer<'_> {
    fn err<T>(&self, what: &str) -> Result<T> {
        Err(Error::Corrupt(format!(
            "LVM metadata line {}: {what}",
            self.line
        )))
    }

    fn next(&mut self) -> Result<Tok> {
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return Ok(Tok::End);
            };
            match c {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                b' ' | b'\t' | b'\r' => self.at += 1,
                b'#' => {
                    while self.s.get(self.at).is_some_and(|&c| c != b'\n') {
                        self.at += 1;
                    }
                }
                _ => break,
            }
        }
        let c = self.s[self.at];
        self.at += 1;
        Ok(match c {
            b'{' => Tok::Open,
            b'}' => Tok::Close,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b',' => Tok::Comma,
            b'=' => Tok::Eq,
            b'"' | b'\'' => {
                let mut v = Vec::new();
                loop {
                    let Some(&d) = self.s.get(self.at) else {
                        return self.err("unterminated string");
                    };
                    self.at += 1;
                    match d {
                        _ if d == c => break,
                        b'\\' => {
                            let Some(&e) = self.s.get(self.at) else {
                                return self.err("unterminated string");
                            };
                            self.at += 1;
                            v.push(e);
                        }
                        b'\n' => {
                            self.line += 1;
                            v.push(d);
                        }
                        _ => v.push(d),
                    }
                }
                Tok::Str(String::from_utf8_lossy(&v).into_owned())
            }
            _ if is_word(c) => {
                let start = self.at - 1;
                while self.s.get(self.at).is_some_and(|&c| is_word(c)) {
                    self.at += 1;
                }
                Tok::Word(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
            }
            _ => return self.err(&format!("unexpected byte 0x{c:02x}")),
        })
    }
}

fn scalar(lx: &Lexer, t: Tok) -> Result<Value> {
    match t {
        Tok::Str(s) => Ok(Value::Str(s)),
        Tok::Word(w) => match w.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            // Floats (libdm allows them; LVM metadata has none) are kept as text.
            Err(_) if w.parse::<f64>().is_ok() => Ok(Value::Str(w)),
            Err(_) => lx.err(&format!("\"{w}\" is not a value")),
        },
        _ => lx.err("expected a value"),
    }
}

/// Parses metadata text (trailing NULs, as stored in the metadata area, are ignored).
/// The result is an unnamed root section holding the top-level assignments and sections.
pub fn parse(text: &[u8]) -> Result<Section> {
    let end = text.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
    let mut lx = Lexer {
        s: &text[..end],
        at: 0,
        line: 1,
    };
    let mut stack = vec![Section::default()];
    loop {
        match lx.next()? {
            Tok::End => {
                if stack.len() != 1 {
                    return lx.err("unexpected end of text inside a section");
                }
                return Ok(stack.pop().unwrap_or_default());
            }
            Tok::Close => {
                if stack.len() == 1 {
                    return lx.err("unbalanced '}'");
                }
                let done = stack.pop().unwrap_or_default();
                if let Some(parent) = stack.last_mut() {
                    parent.sections.push(done);
                }
            }
            Tok::Word(name) => match lx.next()? {
                Tok::Open => {
                    if stack.len() > MAX_DEPTH {
                        return lx.err("sections nested too deeply");
                    }
                    stack.push(Section {
                        name,
                        ..Section::default()
                    });
                }
                Tok::Eq => {
                    let v = match lx.next()? {
                        Tok::LBracket => {
                            let mut items = Vec::new();
                            let mut t = lx.next()?;
                            if t != Tok::RBracket {
                                loop {
                                    items.push(scalar(&lx, t)?);
                                    match lx.next()? {
                                        Tok::Comma => t = lx.next()?,
                                        Tok::RBracket => break,
                                        _ => return lx.err("expected ',' or ']' in a list"),
                                    }
                                }
                            }
                            Value::List(items)
                        }
                        t => scalar(&lx, t)?,
                    };
                    if let Some(s) = stack.last_mut() {
                        s.values.push((name, v));
                    }
                }
                _ => return lx.err(&format!("expected '=' or '{{' after \"{name}\"")),
            },
            _ => return lx.err("expected a name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lvm_text() {
        let t = br#"# comment
vg0 {
id = "abc"
seqno = 3
status = ["READ", "WRITE"]
empty = []
physical_volumes {
pv0 {
pe_start = 2048
}
}
}
contents = "Text Format Volume Group"
desc = "with \"quotes\" and \\"
"#;
        let root = parse(t).unwrap();
        let vg = root.section("vg0").unwrap();
        assert_eq!(vg.uint("seqno"), Some(3));
        assert_eq!(vg.strs("status"), Some(vec!["READ", "WRITE"]));
        assert_eq!(vg.strs("empty"), Some(vec![]));
        assert_eq!(
            vg.section("physical_volumes")
                .and_then(|p| p.section("pv0"))
                .and_then(|p| p.uint("pe_start")),
            Some(2048)
        );
        assert_eq!(root.str("desc"), Some("with \"quotes\" and \\"));
    }

    #[test]
    fn rejects_hostile_text() {
        let deep = "a {".repeat(40) + &"}".repeat(40);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(b"a { b = [ [1] ] }").is_err());
        assert!(parse(b"a { b = \"x").is_err());
        assert!(parse(b"}").is_err());
        assert!(parse(b"a {").is_err());
        assert_eq!(
            parse(b"a = 99999999999999999999999").unwrap().int("a"),
            None
        );
        assert!(parse(b"a = \x01").is_err());
    }
}
