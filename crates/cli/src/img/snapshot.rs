//! qemu-img snapshot

use super::{opt_last, parse_format, wants_help, Ctx, Fail, R};
use crate::getopt::{Opt, Spec};

const SPEC: Spec = Spec {
    short: "la:c:d:f:hqU",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("force-share", false),
    ],
};

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{}", super::HELP);
        return Ok(0);
    }
    let mut action: Option<(char, String)> = None;
    for o in &a.opts {
        if let Opt::Short(c @ ('l' | 'a' | 'c' | 'd'), v) = o {
            if action.is_some() {
                return Err(Fail::new("Cannot mix '-l', '-a', '-c', '-d'"));
            }
            action = Some((*c, v.clone().unwrap_or_default()));
        }
    }
    let (act, name) = action.unwrap_or(('l', String::new()));
    let fmt = opt_last(&a, 'f').map(|f| parse_format(&f)).transpose()?;
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    let img = super::open_image(ctx, file, fmt, act != 'l')?;
    let res = match act {
        'l' => {
            let snaps = img
                .snapshots()
                .map_err(|e| Fail::new(format!("{file}: {}", super::emsg(&e))))?;
            if !snaps.is_empty() {
                print!("Snapshot list:\n{}", super::info::snapshot_table(&snaps));
            }
            return Ok(0);
        }
        'c' => img
            .snapshot_create(&name)
            .map_err(|e| format!("Could not create snapshot '{name}': {}", super::emsg(&e))),
        'a' => img.snapshot_apply(&name).map_err(|e| {
            let m = super::emsg(&e);
            if m == "snapshot not found" {
                format!("Could not apply snapshot '{name}': Failed to load snapshot: No such file or directory")
            } else {
                format!("Could not apply snapshot '{name}': {m}")
            }
        }),
        _ => img
            .snapshot_delete(&name)
            .map_err(|e| format!("Could not delete snapshot '{name}': {}", super::emsg(&e))),
    };
    res.map_err(Fail::new)?;
    Ok(0)
}
