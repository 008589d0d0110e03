#![no_main]

#[path = "../harness_cgroups.rs"]
mod harness_cgroups;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness_cgroups::oci_cgroup_files(data));
