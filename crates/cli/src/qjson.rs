//! JSON printed the way QEMU prints QObjects, so `--output=json` matches qemu-img byte for byte:
//! keys come out in QDict hash-bucket order (newest first within a bucket), with QEMU's
//! four-space pretty printing.

pub enum V {
    Int(i128),
    Bool(bool),
    Str(String),
    List(Vec<V>),
    Dict(Dict),
}

#[derive(Default)]
pub struct Dict(Vec<(String, V)>);

impl Dict {
    pub fn new() -> Self {
        Dict(Vec::new())
    }
    pub fn put(&mut self, k: &str, v: V) -> &mut Self {
        self.0.push((k.to_string(), v));
        self
    }
    pub fn int(&mut self, k: &str, v: impl Into<i128>) -> &mut Self {
        self.put(k, V::Int(v.into()))
    }
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.put(k, V::Bool(v))
    }
    pub fn str(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.put(k, V::Str(v.into()))
    }
    /// Entries in the order QEMU's QDict iterates them.
    pub fn ordered(&self) -> Vec<&(String, V)> {
        let mut v: Vec<(usize, &(String, V))> = self.0.iter().enumerate().collect();
        v.sort_by_key(|(i, (k, _))| (bucket(k), std::cmp::Reverse(*i)));
        v.into_iter().map(|(_, e)| e).collect()
    }
}

/// QEMU's tdb_hash modulo QDICT_BUCKET_MAX.
fn bucket(name: &str) -> u32 {
    let mut v: u32 = 0x238F_13AFu32.wrapping_mul(name.len() as u32);
    for (i, c) in name.bytes().enumerate() {
        v = v.wrapping_add((c as u32) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(v).wrapping_add(12345) % 512
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut b = [0u16; 2];
                for u in c.encode_utf16(&mut b) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn pretty(v: &V, level: usize, out: &mut String) {
    match v {
        V::Int(i) => out.push_str(&i.to_string()),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::Str(s) => escape(out, s),
        V::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                indent(out, level + 1);
                pretty(e, level + 1, out);
            }
            out.push('\n');
            indent(out, level);
            out.push(']');
        }
        V::Dict(d) => {
            out.push('{');
            for (i, (k, e)) in d.ordered().into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                indent(out, level + 1);
                escape(out, k);
                out.push_str(": ");
                pretty(e, level + 1, out);
            }
            out.push('\n');
            indent(out, level);
            out.push('}');
        }
    }
}

pub fn to_string(v: &V) -> String {
    let mut s = String::new();
    pretty(v, 0, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn check_json_order_matches_qemu() {
        let mut d = Dict::new();
        d.str("filename", "o.qcow2")
            .str("format", "qcow2")
            .int("check-errors", 0);
        d.int("image-end-offset", 159744)
            .int("total-clusters", 262144)
            .int("allocated-clusters", 32);
        let s = to_string(&V::Dict(d));
        assert_eq!(
            s,
            "{\n    \"image-end-offset\": 159744,\n    \"total-clusters\": 262144,\n    \"check-errors\": 0,\n    \"allocated-clusters\": 32,\n    \"filename\": \"o.qcow2\",\n    \"format\": \"qcow2\"\n}"
        );
    }
}
