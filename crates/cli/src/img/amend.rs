//! qemu-img amend

use super::{Ctx, Fail, R};

pub fn run(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new(
        "Command 'amend' is not implemented yet in virtkit",
    ))
}
