//! virtkit img ova-import / ova-export: OVF packages (not part of qemu-img).

use super::{Ctx, Fail, R};

pub fn import(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new("Command 'ova-import' is not implemented yet"))
}

pub fn export(_ctx: &Ctx, _args: &[String]) -> R {
    Err(Fail::new("Command 'ova-export' is not implemented yet"))
}
