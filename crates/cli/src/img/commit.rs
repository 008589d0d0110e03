//! qemu-img commit

use super::{Ctx, Fail, R};

pub fn run(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new(
        "Command 'commit' is not implemented yet in virtkit",
    ))
}
