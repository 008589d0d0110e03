//! qemu-img measure

use super::{Ctx, Fail, R};

pub fn run(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new(
        "Command 'measure' is not implemented yet in virtkit",
    ))
}
