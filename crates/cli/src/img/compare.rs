//! qemu-img compare: exit 0 identical, 1 different, 2 error.

use super::{has_flag, opt_last, parse_format, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use virtkit_image::map::chain_status;
use virtkit_image::BlockDriver;

const SPEC: Spec = Spec {
    short: "hf:F:T:pqsU",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("force-share", false),
    ],
};

const CHUNK: u64 = 1 << 20;

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{}", super::HELP);
        return Ok(0);
    }
    let quiet = has_flag(&a, 'q');
    let strict = has_flag(&a, 's');
    let f1 = opt_last(&a, 'f')
        .map(|f| parse_format(&f))
        .transpose()
        .map_err(|e| e.code(2))?;
    let f2 = opt_last(&a, 'F')
        .map(|f| parse_format(&f))
        .transpose()
        .map_err(|e| e.code(2))?;
    let [n1, n2] = a.args.as_slice() else {
        return Err(Fail::new("Expecting two image file names"));
    };
    let i1 = super::open_image(ctx, n1, f1, false).map_err(|e| e.code(2))?;
    let i2 = super::open_image(ctx, n2, f2, false).map_err(|e| e.code(2))?;
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    let err = |n: &str, e: virtkit_image::Error| {
        Fail::new(format!("Error while reading {n}: {}", super::emsg(&e))).code(2)
    };
    let (s1, s2) = (i1.virtual_size(), i2.virtual_size());
    if s1 != s2 && strict {
        say("Strict mode: Image size mismatch!".into());
        return Ok(1);
    }
    let common = s1.min(s2);
    let mut b1 = vec![0u8; CHUNK as usize];
    let mut b2 = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < common {
        // Each image is asked about all that remains, as qemu-img does: a status run that
        // reaches the image's end carries qemu's EOF flag, which strict mode compares too.
        let e1 = chain_status(i1.as_ref(), pos, common - pos).map_err(|e| err(n1, e))?;
        let e2 = chain_status(i2.as_ref(), pos, common - pos).map_err(|e| err(n2, e))?;
        let n = e1.length.min(e2.length);
        let st = |e: &virtkit_image::map::MapEntry, size: u64| {
            (
                e.present,
                e.zero,
                e.data,
                e.offset.is_some(),
                pos + e.length >= size,
            )
        };
        if strict && st(&e1, s1) != st(&e2, s2) {
            say(format!("Strict mode: Offset {pos} block status mismatch!"));
            return Ok(1);
        }
        // Both read as zero without data: nothing to read.
        let both_zero = e1.zero && e2.zero && !e1.data && !e2.data;
        if !both_zero {
            let mut p = pos;
            while p < pos + n {
                let k = (pos + n - p).min(CHUNK) as usize;
                let (x, y) = (&mut b1[..k], &mut b2[..k]);
                i1.read_at(x, p).map_err(|e| err(n1, e))?;
                i2.read_at(y, p).map_err(|e| err(n2, e))?;
                if let Some(i) = x.iter().zip(y.iter()).position(|(a, b)| a != b) {
                    say(format!(
                        "Content mismatch at offset {}!",
                        (p + i as u64) / 512 * 512
                    ));
                    return Ok(1);
                }
                p += k as u64;
            }
        }
        pos += n;
    }
    if s1 != s2 {
        say("Warning: Image size mismatch!".into());
        let (big, name) = if s1 > s2 { (&i1, n1) } else { (&i2, n2) };
        if let Some(off) = first_nonzero(big.as_ref(), common).map_err(|e| err(name, e))? {
            say(format!("Content mismatch at offset {off}!"));
            return Ok(1);
        }
    }
    say("Images are identical.".into());
    Ok(0)
}

/// First non-zero byte (sector aligned) at or after `from`.
fn first_nonzero(img: &dyn BlockDriver, from: u64) -> Result<Option<u64>, virtkit_image::Error> {
    let size = img.virtual_size();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = from;
    while pos < size {
        let e = chain_status(img, pos, (size - pos).min(CHUNK))?;
        if e.data || !e.zero {
            let b = &mut buf[..e.length as usize];
            img.read_at(b, pos)?;
            if let Some(i) = b.iter().position(|&x| x != 0) {
                return Ok(Some((pos + i as u64) / 512 * 512));
            }
        }
        pos += e.length;
    }
    Ok(None)
}
