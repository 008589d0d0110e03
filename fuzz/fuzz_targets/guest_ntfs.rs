#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(
    init: {
        // The ntfs crate (0.4.0) panics on some malformed index entries; the reader contains
        // those panics (catch_unwind) and returns Error::Corrupt. libfuzzer-sys' hook would
        // abort on them anyway, so panics raised inside the ntfs crate are let through to
        // that containment; any other panic still aborts here, and one that escapes the
        // reader aborts in libfuzzer-sys' wrapper.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_crate = info
                .location()
                .is_some_and(|l| l.file().contains("/ntfs-0.4"));
            if !in_crate {
                fuzzer_hook(info);
            }
        }));
    },
    |data: &[u8]| harness::guest_ntfs(data)
);
