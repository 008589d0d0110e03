//! Creating vmdk images with qemu-img's options.

use crate::create::{CreatePlan, Opts};
use crate::error::{Error, Result};

pub const OPTION_HELP: &str = "";

pub fn plan(_opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    Err(Error::Unsupported(
        "Creating 'vmdk' images is not supported yet".into(),
    ))
}
