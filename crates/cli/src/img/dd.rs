//! qemu-img dd

use super::{Ctx, Fail, R};

pub fn run(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new("Command 'dd' is not implemented yet in virtkit"))
}
