//! qemu-img bitmap

use super::{Ctx, Fail, R};

pub fn run(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new(
        "Command 'bitmap' is not implemented yet in virtkit",
    ))
}
