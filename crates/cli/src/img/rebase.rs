//! qemu-img rebase

use super::{Ctx, Fail, R};

pub fn run(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new(
        "Command 'rebase' is not implemented yet in virtkit",
    ))
}
