//! The text descriptor of a VMDK image: parsed the way QEMU parses it (`createType`, extent
//! lines, `CID`/`parentCID`, `parentFileNameHint`), rewritten the way QEMU rewrites the CID,
//! and generated with the template qemu-img writes.
//!
//! QEMU treats the descriptor as a C string searched with strstr and sscanf; the helpers here
//! reproduce those semantics (first match anywhere, text ends at the first NUL) so that the
//! same files open with the same results. One deliberate difference: an extent line is one
//! line. sscanf skips newlines as whitespace, so in QEMU an empty line directly before an
//! extent line parses as that extent a second time (doubling the disk); here it does not.

/// Bytes of descriptor QEMU reads for the CID and the parent hint (20 sectors).
pub const DESC_SIZE: usize = 20 * 512;
/// Longest descriptor read for parsing extents (QEMU's vmdk_read_desc cap).
pub const MAX_DESC_READ: u64 = (1 << 20) - 1;
/// Longest parent file name (QEMU's PATH_MAX-sized buffer, less the NUL).
const MAX_PARENT_NAME: usize = 4095;

/// The C string at the start of `b`: everything before the first NUL.
pub fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// strstr: offset of the first occurrence of `needle`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&c| c == first)
        {
            None => return None,
            Some(p) => {
                let at = i + p;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
        }
    }
    None
}

/// QEMU's vmdk_parse_description: the text between the quotes of `name="..."`, found with
/// strstr (the two characters after the name are skipped unchecked, as QEMU does), at most
/// `buf_size - 1` bytes long.
pub fn description(desc: &[u8], name: &str, buf_size: usize) -> Option<Vec<u8>> {
    let desc = cstr(desc);
    let pos = find(desc, name.as_bytes())?;
    let start = pos + name.len() + 2;
    if start >= desc.len() {
        return None;
    }
    let len = desc[start..].iter().position(|&c| c == b'"')?;
    if buf_size < len + 1 {
        return None;
    }
    Some(desc[start..start + len].to_vec())
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Just enough of sscanf for QEMU's descriptor formats, over one line.
struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && is_space(self.s[self.i]) {
            self.i += 1;
        }
    }
    /// `%Ns`
    fn token(&mut self, max: usize) -> Option<&'a [u8]> {
        self.ws();
        let st = self.i;
        while self.i < self.s.len() && !is_space(self.s[self.i]) && self.i - st < max {
            self.i += 1;
        }
        (self.i > st).then(|| &self.s[st..self.i])
    }
    /// `%ld` (glibc saturates on overflow).
    fn int(&mut self) -> Option<i64> {
        self.ws();
        let mut j = self.i;
        let neg = match self.s.get(j) {
            Some(b'-') => {
                j += 1;
                true
            }
            Some(b'+') => {
                j += 1;
                false
            }
            _ => false,
        };
        let st = j;
        let mut v: i128 = 0;
        while j < self.s.len() && self.s[j].is_ascii_digit() {
            v = (v * 10 + (self.s[j] - b'0') as i128).min(i64::MAX as i128 + 1);
            j += 1;
        }
        if j == st {
            return None;
        }
        self.i = j;
        let v = if neg { -v } else { v };
        Some(v.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
    }
    /// A literal character.
    fn lit(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// `%N[^\n\r"]`
    fn name(&mut self, max: usize) -> Option<&'a [u8]> {
        let st = self.i;
        while self.i < self.s.len()
            && !matches!(self.s[self.i], b'\n' | b'\r' | b'"')
            && self.i - st < max
        {
            self.i += 1;
        }
        (self.i > st).then(|| &self.s[st..self.i])
    }
}

/// One `RW <sectors> <TYPE> "<file>" [offset]` line that QEMU opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine<'a> {
    pub sectors: u64,
    pub kind: &'static str,
    pub file: &'a [u8],
    /// Start of the data in a FLAT/VMFS file, in sectors.
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Not an extent QEMU opens (comments, other keys, RDONLY/NOACCESS, ZERO, sizes <= 0...).
    Skip,
    /// Looks like an extent but is malformed: "Invalid extent line: ...".
    Invalid,
    Extent(ExtentLine<'a>),
}

const TYPES: [&str; 5] = ["FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"];

/// QEMU's `sscanf(p, "%10s %ld %10s \"%511[^\n\r\"]\" %ld", ...)` and what vmdk_parse_extents
/// decides from it.
pub fn parse_extent_line(line: &[u8]) -> Line<'_> {
    let mut sc = Scan { s: line, i: 0 };
    let Some(access) = sc.token(10) else {
        return Line::Skip;
    };
    let Some(sectors) = sc.int() else {
        return Line::Skip;
    };
    let Some(kind) = sc.token(10) else {
        return Line::Skip;
    };
    sc.ws();
    if !sc.lit(b'"') {
        return Line::Skip;
    }
    let Some(file) = sc.name(511) else {
        return Line::Skip;
    };
    let offset = if sc.lit(b'"') { sc.int() } else { None };
    if access != b"RW" {
        return Line::Skip;
    }
    let offset = match (kind, offset) {
        (b"FLAT", Some(o)) if o >= 0 => o as u64,
        (b"FLAT", _) => return Line::Invalid,
        (b"VMFS", None) => 0,
        (b"VMFS", Some(_)) => return Line::Invalid,
        (_, Some(_)) => return Line::Invalid,
        (_, None) => 0,
    };
    let Some(kind) = TYPES.iter().find(|t| t.as_bytes() == kind) else {
        return Line::Skip;
    };
    if sectors <= 0 {
        return Line::Skip;
    }
    Line::Extent(ExtentLine {
        sectors: sectors as u64,
        kind,
        file,
        offset,
    })
}

/// The lines of a descriptor as QEMU walks them (each without its '\n').
pub fn lines(desc: &[u8]) -> impl Iterator<Item = &[u8]> {
    let d = cstr(desc);
    let mut rest = Some(d);
    std::iter::from_fn(move || {
        let r = rest?;
        if r.is_empty() {
            rest = None;
            return None;
        }
        match r.iter().position(|&c| c == b'\n') {
            Some(p) => {
                rest = Some(&r[p + 1..]);
                Some(&r[..p])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `%x` as glibc's sscanf reads it into a uint32_t.
fn scan_hex(s: &[u8]) -> Option<u32> {
    let mut i = 0;
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
    {
        i += 2;
    }
    let st = i;
    let mut v: u64 = 0;
    let mut overflow = false;
    while i < s.len() && s[i].is_ascii_hexdigit() {
        let d = (s[i] as char).to_digit(16).unwrap_or(0) as u64;
        match v.checked_mul(16).and_then(|x| x.checked_add(d)) {
            Some(x) => v = x,
            None => overflow = true,
        }
        i += 1;
    }
    if i == st {
        return None;
    }
    if overflow {
        v = u64::MAX;
    }
    if neg {
        v = v.wrapping_neg();
    }
    Some(v as u32)
}

/// vmdk_read_cid over the DESC_SIZE bytes read at the descriptor offset: the hex number after
/// the first "CID" (or "parentCID") and one more character.
pub fn read_cid(buf: &[u8], parent: bool) -> Option<u32> {
    let n = buf.len().min(DESC_SIZE);
    let mut b = buf[..n].to_vec();
    if let Some(last) = b.last_mut() {
        *last = 0;
    }
    let key: &[u8] = if parent { b"parentCID" } else { b"CID" };
    let pos = find(cstr(&b), key)?;
    let at = pos + key.len() + 1;
    if at >= b.len() {
        return None;
    }
    scan_hex(&b[at..])
}

/// vmdk_write_cid on the buffer read at the descriptor offset (DESC_SIZE bytes for an
/// embedded descriptor, the whole file in sectors for a descriptor file): the text from
/// "parentCID" on is kept, the first "CID=" gets the new value. Returns None when there is
/// no "parentCID" (QEMU fails the write with EINVAL). The last byte is forced to NUL and
/// bytes after the new terminating NUL keep what was there, as in QEMU's in-place rewrite.
pub fn write_cid(buf: &mut [u8], cid: u32) -> Option<()> {
    let size = buf.len();
    if size == 0 {
        return None;
    }
    buf[size - 1] = 0;
    let text_len = cstr(buf).len();
    let pc = find(&buf[..text_len], b"parentCID")?;
    let tail = buf[pc..text_len].to_vec();
    let at = find(&buf[..text_len], b"CID")? + 4;
    if at >= size {
        return None;
    }
    // snprintf(p, size - at, "%x\n", cid)
    let s = format!("{cid:x}\n");
    let n = s.len().min(size - at - 1);
    buf[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
    buf[at + n] = 0;
    // pstrcat(desc, size, tail)
    let end = at + n;
    let m = tail.len().min(size - 1 - end);
    buf[end..end + m].copy_from_slice(&tail[..m]);
    buf[end + m] = 0;
    Some(())
}

/// A `parentFileNameHint` without its closing quote, or longer than QEMU accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHint;

/// The `parentFileNameHint="..."` of the descriptor (QEMU's vmdk_parent_open): Ok(None)
/// without one, BadHint when it is unterminated or too long (QEMU: EINVAL).
pub fn parent_hint(buf: &[u8]) -> std::result::Result<Option<Vec<u8>>, BadHint> {
    let n = buf.len().min(DESC_SIZE);
    let text = cstr(&buf[..n]);
    let key = b"parentFileNameHint";
    let Some(pos) = find(text, key) else {
        return Ok(None);
    };
    let start = pos + key.len() + 2;
    if start > text.len() {
        return Err(BadHint);
    }
    let Some(len) = text[start..].iter().position(|&c| c == b'"') else {
        return Err(BadHint);
    };
    if len > MAX_PARENT_NAME {
        return Err(BadHint);
    }
    Ok(Some(text[start..start + len].to_vec()))
}

/// The descriptor qemu-img writes (vmdk_co_do_create's template).
pub struct Template<'a> {
    pub cid: u32,
    pub parent_cid: u32,
    pub create_type: &'a str,
    pub parent_hint: Option<&'a str>,
    /// Extent lines, each ending in '\n'.
    pub extents: &'a str,
    pub hw_version: &'a str,
    pub cylinders: u64,
    pub heads: u32,
    pub adapter_type: &'a str,
    pub tools_version: &'a str,
}

impl Template<'_> {
    pub fn render(&self) -> String {
        let parent = self
            .parent_hint
            .map(|p| format!("parentFileNameHint=\"{p}\""))
            .unwrap_or_default();
        format!(
            "# Disk DescriptorFile\nversion=1\nCID={:x}\nparentCID={:x}\ncreateType=\"{}\"\n{}\n\
             # Extent description\n{}\n# The Disk Data Base\n#DDB\n\n\
             ddb.virtualHWVersion = \"{}\"\nddb.geometry.cylinders = \"{}\"\n\
             ddb.geometry.heads = \"{}\"\nddb.geometry.sectors = \"63\"\n\
             ddb.adapterType = \"{}\"\nddb.toolsVersion = \"{}\"\n",
            self.cid,
            self.parent_cid,
            self.create_type,
            parent,
            self.extents,
            self.hw_version,
            self.cylinders,
            self.heads,
            self.adapter_type,
            self.tools_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_lines_as_qemu_reads_them() {
        let e = |s: &str| match parse_extent_line(s.as_bytes()) {
            Line::Extent(x) => Some((x.sectors, x.kind, x.file.to_vec(), x.offset)),
            _ => None,
        };
        assert_eq!(
            e("RW 2048 FLAT \"a b.raw\" 7"),
            Some((2048, "FLAT", b"a b.raw".to_vec(), 7))
        );
        assert_eq!(
            e("RW 10 SPARSE \"x.vmdk\""),
            Some((10, "SPARSE", b"x.vmdk".to_vec(), 0))
        );
        assert_eq!(e("RW 10 VMFS \"x\"").map(|x| x.3), Some(0));
        assert_eq!(parse_extent_line(b"RW 10 FLAT \"x\""), Line::Invalid);
        assert_eq!(parse_extent_line(b"RW 10 FLAT \"x\" -1"), Line::Invalid);
        assert_eq!(parse_extent_line(b"RW 10 SPARSE \"x\" 0"), Line::Invalid);
        assert_eq!(parse_extent_line(b"RW 10 ZERO \"x\" 0"), Line::Invalid);
        assert_eq!(parse_extent_line(b"RW 10 ZERO"), Line::Skip);
        assert_eq!(parse_extent_line(b"RDONLY 10 FLAT \"x\" 0"), Line::Skip);
        assert_eq!(parse_extent_line(b"RW 0 FLAT \"x\" 0"), Line::Skip);
        assert_eq!(parse_extent_line(b"RW 10 BOGUS \"x\""), Line::Skip);
        assert_eq!(parse_extent_line(b"# comment"), Line::Skip);
        assert_eq!(parse_extent_line(b""), Line::Skip);
        assert_eq!(
            e("RW 99999999999999999999999 FLAT \"x\" 0").map(|x| x.0),
            Some(i64::MAX as u64)
        );
    }

    #[test]
    fn cid_read_and_rewrite() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"x\"\n";
        let mut buf = vec![0u8; DESC_SIZE];
        buf[..text.len()].copy_from_slice(text);
        assert_eq!(read_cid(&buf, false), Some(0xffff_fffe));
        assert_eq!(read_cid(&buf, true), Some(0xffff_ffff));
        write_cid(&mut buf, 0x1a).unwrap();
        assert_eq!(read_cid(&buf, false), Some(0x1a));
        assert_eq!(read_cid(&buf, true), Some(0xffff_ffff));
        let t = cstr(&buf);
        assert!(t.ends_with(b"CID=1a\nparentCID=ffffffff\ncreateType=\"x\"\n"));
        // Without a CID line, "CID" is found inside "parentCID" (as in QEMU).
        let mut b2 = vec![0u8; DESC_SIZE];
        b2[..22].copy_from_slice(b"parentCID=12\nversion=1");
        assert_eq!(read_cid(&b2, false), Some(0x12));
    }

    #[test]
    fn parent_hint_forms() {
        assert_eq!(
            parent_hint(b"a\nparentFileNameHint=\"b.vmdk\"\n"),
            Ok(Some(b"b.vmdk".to_vec()))
        );
        assert_eq!(parent_hint(b"nothing"), Ok(None));
        assert_eq!(parent_hint(b"parentFileNameHint=\"open"), Err(BadHint));
    }

    #[test]
    fn template_blank_line_only_without_parent() {
        let mut t = Template {
            cid: 1,
            parent_cid: 0xffff_ffff,
            create_type: "monolithicSparse",
            parent_hint: None,
            extents: "RW 2048 SPARSE \"a.vmdk\"\n",
            hw_version: "4",
            cylinders: 2,
            heads: 16,
            adapter_type: "ide",
            tools_version: "2147483647",
        };
        assert!(t
            .render()
            .contains("createType=\"monolithicSparse\"\n\n# Extent description\nRW 2048"));
        t.parent_hint = Some("b.vmdk");
        assert!(t
            .render()
            .contains("\"monolithicSparse\"\nparentFileNameHint=\"b.vmdk\"\n# Extent"));
    }
}
