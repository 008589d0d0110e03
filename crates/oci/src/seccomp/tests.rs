//! Semantics of compiled programs, checked by running them in the BPF interpreter for every
//! architecture (the kernel tests are in crates/oci/tests/seccomp.rs).

use super::compiler::*;
use super::*;
use serde_json::json;

const X86_64: u32 = 0xc000_003e;
const X86: u32 = 0x4000_0003;
const AARCH64: u32 = 0xc000_00b7;
const X32_BIT: u32 = 0x4000_0000;
const ERRNO_EPERM: u32 = RET_ERRNO | 1;
const ERRNO_ENOSYS: u32 = RET_ERRNO | 38;

fn profile(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("test profile parses")
}

fn build(v: serde_json::Value) -> Program {
    compile_for_arch(&profile(v), "SCMP_ARCH_X86_64").expect("compiles")
}

fn err(v: serde_json::Value) -> String {
    compile_for_arch(&profile(v), "SCMP_ARCH_X86_64")
        .expect_err("must not compile")
        .to_string()
}

fn eval(p: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    verify_ok(p);
    p.evaluate(&SeccompData {
        nr: nr as i32,
        arch,
        instruction_pointer: 0,
        args,
    })
}

fn verify_ok(p: &Program) {
    bpf::verify(p.instructions()).expect("program passes the kernel's checks");
}

fn a0(x: u64) -> [u64; 6] {
    [x, 0, 0, 0, 0, 0]
}

const MKDIR: u32 = 83;
const MKDIRAT: u32 = 258;
const PERSONALITY: u32 = 135;
const GETPID: u32 = 39;

#[test]
fn actions_and_return_values() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28},
            {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["rmdir"], "action": "SCMP_ACT_KILL"},
            {"names": ["unlink"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["chdir"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getuid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["getgid"], "action": "SCMP_ACT_TRACE"},
            {"names": ["uname"], "action": "SCMP_ACT_LOG"}
        ]
    }));
    assert_eq!(eval(&p, X86_64, MKDIR, a0(0)), RET_ERRNO | 28);
    assert_eq!(eval(&p, X86_64, MKDIRAT, a0(0)), ERRNO_EPERM);
    assert_eq!(eval(&p, X86_64, 84, a0(0)), RET_KILL_THREAD);
    assert_eq!(eval(&p, X86_64, 87, a0(0)), RET_KILL_THREAD);
    assert_eq!(eval(&p, X86_64, 80, a0(0)), RET_KILL_PROCESS);
    assert_eq!(eval(&p, X86_64, 110, a0(0)), RET_TRAP);
    assert_eq!(eval(&p, X86_64, 102, a0(0)), RET_TRACE | 7);
    assert_eq!(eval(&p, X86_64, 104, a0(0)), RET_TRACE | 1);
    assert_eq!(eval(&p, X86_64, 63, a0(0)), RET_LOG);
    assert_eq!(eval(&p, X86_64, GETPID, a0(0)), RET_ALLOW);
    // Default ALLOW: no -ENOSYS stub.
    assert_eq!(eval(&p, X86_64, 460, a0(0)), RET_ALLOW);
    // Other architectures: libseccomp's bad-arch action.
    assert_eq!(eval(&p, AARCH64, 34, a0(0)), RET_KILL_THREAD);
    assert_eq!(eval(&p, X86, 39, a0(0)), RET_KILL_THREAD);
    // x32 syscalls on x86_64 without x32 listed: bad arch; nr -1 still reaches the rules.
    assert_eq!(eval(&p, X86_64, X32_BIT | MKDIR, a0(0)), RET_KILL_THREAD);
    assert_eq!(eval(&p, X86_64, u32::MAX, a0(0)), RET_ALLOW);
}

#[test]
fn default_errno_and_enosys_stub() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "syscalls": [{"names": ["getpid", "mkdir", "sched_yield"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(eval(&p, X86_64, GETPID, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, 24, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, 0, a0(0)), RET_ERRNO | 13);
    assert_eq!(eval(&p, X86_64, 40, a0(0)), RET_ERRNO | 13);
    assert_eq!(eval(&p, X86_64, MKDIR, a0(0)), RET_ALLOW);
    // Newer than the newest call the profile names (mkdir, 83): ENOSYS, as runc does.
    assert_eq!(eval(&p, X86_64, 84, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, X86_64, 0x3fff_ffff, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, X86_64, 0x8000_0000, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, X86_64, X32_BIT | 1, a0(0)), RET_KILL_THREAD);
    assert_eq!(eval(&p, X86_64, u32::MAX, a0(0)), RET_ERRNO | 13);
    assert_eq!(p.flags() & FLAG_NEW_LISTENER, 0);
}

#[test]
fn no_syscalls_at_all() {
    let p = build(json!({"defaultAction": "SCMP_ACT_ERRNO"}));
    assert_eq!(eval(&p, X86_64, GETPID, a0(0)), ERRNO_EPERM);
    let p = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}));
    assert_eq!(eval(&p, X86_64, GETPID, a0(0)), RET_ALLOW);
}

/// Every operator against a brute-force model, on values around the 32-bit halves.
#[test]
fn argument_operators_on_64_bit_values() {
    let values: [u64; 12] = [
        0,
        1,
        5,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0005,
        0x2_0000_0004,
        0x2_0000_0005,
        0x2_0000_0006,
        0x1_ffff_ffff,
        u64::MAX - 1,
        u64::MAX,
    ];
    type Holds = fn(u64, u64, u64) -> bool;
    let ops: [(&str, Holds); 7] = [
        ("SCMP_CMP_EQ", |a, v, _| a == v),
        ("SCMP_CMP_NE", |a, v, _| a != v),
        ("SCMP_CMP_LT", |a, v, _| a < v),
        ("SCMP_CMP_LE", |a, v, _| a <= v),
        ("SCMP_CMP_GT", |a, v, _| a > v),
        ("SCMP_CMP_GE", |a, v, _| a >= v),
        ("SCMP_CMP_MASKED_EQ", |a, m, d| a & m == d & m),
    ];
    for (op, holds) in ops {
        for &v in &values {
            let v2 = 0x2_0000_0004u64;
            let p = build(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 2, "value": v, "valueTwo": v2, "op": op}]}]
            }));
            for &a in &values {
                let args = [0, 0, a, 0, 0, 0];
                let want = if holds(a, v, v2) {
                    ERRNO_EPERM
                } else {
                    RET_ALLOW
                };
                assert_eq!(
                    eval(&p, X86_64, PERSONALITY, args),
                    want,
                    "{op} value {v:#x}: arg {a:#x}"
                );
            }
        }
    }
}

#[test]
fn thirty_two_bit_abis_compare_the_low_half() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0x1_0000_0005u64, "op": "SCMP_CMP_EQ"}]}]
    }));
    // x86: personality is 136; only the low word counts, as in libseccomp.
    assert_eq!(eval(&p, X86, 136, a0(5)), ERRNO_EPERM);
    assert_eq!(eval(&p, X86, 136, a0(6)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(5)), RET_ALLOW);
    assert_eq!(
        eval(&p, X86_64, PERSONALITY, a0(0x1_0000_0005)),
        ERRNO_EPERM
    );
}

#[test]
fn conditions_and_within_a_rule_or_across_rules() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mmap"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 1, "value": 4096, "op": "SCMP_CMP_GT"},
                      {"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW"}
        ]
    }));
    for (x, want) in [(0, RET_ALLOW), (8, RET_ALLOW), (0xffff_ffff, RET_ALLOW)] {
        assert_eq!(eval(&p, X86_64, PERSONALITY, a0(x)), want, "{x:#x}");
    }
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(1)), ERRNO_EPERM);
    assert_eq!(
        eval(&p, X86_64, PERSONALITY, a0(0x1_0000_0000)),
        ERRNO_EPERM
    );
    // The unconditional ALLOW for mmap wins over the conditional rule, as in libseccomp.
    assert_eq!(eval(&p, X86_64, 9, [0, 8192, 7, 0, 0, 0]), RET_ALLOW);
}

#[test]
fn and_of_conditions() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mmap"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 1, "value": 4096, "op": "SCMP_CMP_GT"},
                      {"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    }));
    assert_eq!(eval(&p, X86_64, 9, [0, 8192, 7, 0, 0, 0]), RET_ERRNO | 22);
    assert_eq!(eval(&p, X86_64, 9, [0, 8192, 3, 0, 0, 0]), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, 9, [0, 4096, 7, 0, 0, 0]), RET_ALLOW);
}

#[test]
fn repeated_argument_means_or_as_in_runc() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                     {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(1)), ERRNO_EPERM);
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(2)), ERRNO_EPERM);
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(3)), RET_ALLOW);
}

#[test]
fn rule_order_follows_libseccomp() {
    // Overlapping conditional rules: libseccomp's tree tries the higher argument first.
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2,
             "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    assert_eq!(
        eval(&p, X86_64, PERSONALITY, [1, 1, 0, 0, 0, 0]),
        RET_ERRNO | 2
    );
    assert_eq!(
        eval(&p, X86_64, PERSONALITY, [1, 0, 0, 0, 0, 0]),
        RET_ERRNO | 1
    );
    assert_eq!(
        eval(&p, X86_64, PERSONALITY, [0, 1, 0, 0, 0, 0]),
        RET_ERRNO | 2
    );
    assert_eq!(eval(&p, X86_64, PERSONALITY, [0, 0, 0, 0, 0, 0]), RET_ALLOW);
}

#[test]
fn rules_equal_to_the_default_are_dropped() {
    // runc skips the unconditional ERRNO (same as the default), so the conditional ALLOW
    // stays in force.
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(1)), ERRNO_EPERM);
}

#[test]
fn first_unconditional_rule_wins() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28},
            {"names": ["mkdir"], "action": "SCMP_ACT_KILL"}
        ]
    }));
    assert_eq!(eval(&p, X86_64, MKDIR, a0(0)), RET_ERRNO | 28);
}

#[test]
fn masked_eq_with_zero_mask_always_holds() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0, "valueTwo": 5, "op": "SCMP_CMP_MASKED_EQ"}]}]
    }));
    assert_eq!(eval(&p, X86_64, PERSONALITY, a0(1234)), ERRNO_EPERM);
}

#[test]
fn x32_and_x86_sections() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "execve", "socket", "getpid", "statx"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(eval(&p, X86_64, MKDIR, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, 59, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, X32_BIT | MKDIR, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, X32_BIT | 520, a0(0)), RET_ALLOW);
    // x32 has no execve at 59: default.
    assert_eq!(eval(&p, X86_64, X32_BIT | 59, a0(0)), ERRNO_EPERM);
    // Above the largest x32 call named (execve, 520): ENOSYS; same on x86.
    assert_eq!(eval(&p, X86_64, X32_BIT | 521, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, X86, 39, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86, 40, a0(0)), ERRNO_EPERM);
    // socket on x86: the direct call (359) and socketcall(SYS_SOCKET).
    assert_eq!(eval(&p, X86, 359, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86, 102, a0(1)), RET_ALLOW);
    assert_eq!(eval(&p, X86, 102, a0(2)), ERRNO_EPERM);
    assert_eq!(eval(&p, X86, 383, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86, 400, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, AARCH64, 34, a0(0)), RET_KILL_THREAD);

    // Socket calls do not raise the -ENOSYS threshold on x86 (runc with libseccomp): with
    // getpid (20) the largest, the direct socket call is above it.
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86"],
        "syscalls": [{"names": ["getpid", "socket"], "action": "SCMP_ACT_ALLOW"}]
    }));
    assert_eq!(eval(&p, X86, 20, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, X86, 359, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, X86_64, 41, a0(0)), RET_ALLOW);
}

#[test]
fn names_missing_on_an_architecture_are_skipped() {
    // mkdir does not exist on aarch64; arch_prctl does not exist on x86.
    let p = compile_for_arch(
        &profile(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_ARM"],
            "syscalls": [{"names": ["mkdir", "mkdirat", "arch_prctl", "set_tls"], "action": "SCMP_ACT_ALLOW"}]
        })),
        "SCMP_ARCH_AARCH64",
    )
    .unwrap();
    assert_eq!(eval(&p, AARCH64, 34, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, AARCH64, 33, a0(0)), ERRNO_EPERM);
    const ARM: u32 = 0x4000_0028;
    assert_eq!(eval(&p, ARM, 39, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, ARM, 0x0f_0005, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, ARM, 0x0f_0006, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, X86_64, MKDIR, a0(0)), RET_KILL_THREAD);
}

#[test]
fn s390x_multiplexer_zero_gets_enosys() {
    let p = compile_for_arch(
        &profile(json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [{"names": ["getpid", "socket", "statx"], "action": "SCMP_ACT_ALLOW"}]
        })),
        "SCMP_ARCH_S390X",
    )
    .unwrap();
    const S390X: u32 = 0x8000_0016;
    assert_eq!(eval(&p, S390X, 0, a0(0)), ERRNO_ENOSYS);
    assert_eq!(eval(&p, S390X, 20, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, S390X, 21, a0(0)), RET_KILL_PROCESS);
    // socket: direct (359) and socketcall(102) with SYS_SOCKET in arg 0.
    assert_eq!(eval(&p, S390X, 359, a0(0)), RET_ALLOW);
    assert_eq!(eval(&p, S390X, 102, a0(1)), RET_ALLOW);
    assert_eq!(eval(&p, S390X, 102, a0(3)), RET_KILL_PROCESS);
}

#[test]
fn big_endian_argument_words() {
    let p = compile_for_arch(
        &profile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 1, "value": 0x1_0000_0002u64, "op": "SCMP_CMP_EQ"}]}]
        })),
        "SCMP_ARCH_S390X",
    )
    .unwrap();
    // The program loads the high word first on big-endian machines: look at the offsets.
    let loads: Vec<u32> = p
        .instructions()
        .iter()
        .filter(|i| i.code == bpf::LD_W_ABS && i.k >= 16)
        .map(|i| i.k)
        .collect();
    assert_eq!(loads, vec![24, 28]);
}

#[test]
fn trace_and_log_defaults_have_no_stub() {
    for act in ["SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW"] {
        let p = build(json!({
            "defaultAction": act,
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_KILL"}]
        }));
        let got = eval(&p, X86_64, 400, a0(0));
        assert_ne!(got, ERRNO_ENOSYS, "{act}");
    }
}

#[test]
fn notify_flags_and_listener() {
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    assert!(p.needs_listener());
    assert_eq!(eval(&p, X86_64, MKDIR, a0(0)), RET_USER_NOTIF);
    assert_eq!(
        p.flags(),
        FLAG_TSYNC | FLAG_NEW_LISTENER | FLAG_TSYNC_ESRCH | FLAG_WAIT_KILLABLE_RECV
    );
    let p = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": []}));
    assert_eq!(p.flags(), 0);
    assert!(!p.needs_listener());
    let p = build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}));
    assert_eq!(p.flags(), FLAG_LOG | FLAG_SPEC_ALLOW);
    assert_eq!(
        p.flag_names(),
        ["SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"]
    );
}

#[test]
fn errors_have_their_own_messages() {
    let allow = |extra: serde_json::Value| {
        let mut v = json!({"defaultAction": "SCMP_ACT_ALLOW"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    assert_eq!(
        err(allow(
            json!({"syscalls": [{"names": ["getpid", "foo"], "action": "SCMP_ACT_KILL"}]})
        )),
        "seccomp: unknown syscall \"foo\""
    );
    assert_eq!(
        err(allow(
            json!({"syscalls": [{"names": [""], "action": "SCMP_ACT_KILL"}]})
        )),
        "seccomp: linux.seccomp.syscalls[0] (\"\"): empty syscall name"
    );
    assert_eq!(
        err(allow(
            json!({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL",
            "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})
        )),
        "seccomp: linux.seccomp.syscalls[0] (\"mkdir\"): argument index 6 is out of range (0-5)"
    );
    assert_eq!(
        err(allow(
            json!({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 4096}]})
        )),
        "seccomp: errnoRet of linux.seccomp.syscalls[0] (\"mkdir\") 4096 is out of range (0-4095)"
    );
    assert_eq!(
        err(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000})),
        "seccomp: linux.seccomp.defaultErrnoRet 70000 is out of range (0-4095)"
    );
    assert!(err(allow(
        json!({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_TRACE", "errnoRet": 65536}]})
    ))
    .contains("out of range (0-65535)"));
    assert_eq!(
        err(json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"})),
        "seccomp: SCMP_ACT_NOTIFY cannot be the default action"
    );
    assert!(err(allow(json!({"listenerPath": "/x",
        "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]})))
    .contains("write syscall"));
    assert_eq!(
        err(allow(
            json!({"syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]})
        )),
        "seccomp: SCMP_ACT_NOTIFY is used but linux.seccomp.listenerPath is not set"
    );
    assert!(err(allow(
        json!({"flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]})
    ))
    .contains("needs an SCMP_ACT_NOTIFY rule"));
    assert_eq!(
        err(allow(json!({"architectures": ["SCMP_ARCH_S390"]}))),
        "seccomp: architecture SCMP_ARCH_S390 is not supported (no syscall table for it)"
    );
    assert!(
        err(allow(json!({"architectures": ["SCMP_ARCH_S390X"]}))).contains("another byte order")
    );
    assert!(err(allow(json!({"syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["personality"], "action": "SCMP_ACT_KILL",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]})))
    .contains("conflicting rules for syscall \"personality\""));
    // Unknown action, operator and architecture names are refused by the spec types.
    for bad in [
        r#"{"defaultAction": "SCMP_ACT_FOO"}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_KILL", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_FOO"}]}]}"#,
    ] {
        assert!(serde_json::from_str::<LinuxSeccomp>(bad).is_err(), "{bad}");
    }
}

#[test]
fn too_many_conditional_rules_is_a_clear_error() {
    let rules: Vec<serde_json::Value> = (0..3000u64)
        .map(|v| {
            json!({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let e = err(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
    assert!(e.contains("more than the kernel's limit of 4096"), "{e}");
}

#[test]
fn long_programs_need_long_jumps_and_still_work() {
    // 300 conditional rules over many syscalls: far beyond 255 instructions.
    let names = ["personality", "mmap", "ioctl", "prctl", "fcntl", "socket"];
    let mut rules = Vec::new();
    for v in 0..50u64 {
        for n in names {
            rules.push(
                json!({"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": v + 1,
                "args": [{"index": 1, "value": v * 3, "op": "SCMP_CMP_EQ"}]}),
            );
        }
    }
    let p = build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": rules}));
    assert!(p.instructions().len() > 1000, "{}", p.instructions().len());
    assert!(p.instructions().iter().any(|i| i.code == bpf::JMP_JA));
    for v in [0u64, 17, 49] {
        assert_eq!(
            eval(&p, X86_64, 16, [0, v * 3, 0, 0, 0, 0]),
            RET_ERRNO | (v as u32 + 1)
        );
        assert_eq!(eval(&p, X86_64, 16, [0, v * 3 + 1, 0, 0, 0, 0]), RET_ALLOW);
        // On x86, socket also gets socketcall with arg 0 = SYS_SOCKET.
        assert_eq!(
            eval(&p, X86, 102, [1, v * 3, 0, 0, 0, 0]),
            RET_ERRNO | (v as u32 + 1)
        );
    }
}

#[test]
fn shared_comparisons_decide_like_libseccomp() {
    // "a0 <= 3" and "a0 > 5" share libseccomp's "high word > 0" comparison, so for a0 =
    // 0xffffffff the GT rule decides although the LE 2^63 rule came first.
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 3,
        "syscalls": [
            {"names": ["mmap"], "action": "SCMP_ACT_TRACE", "errnoRet": 1,
             "args": [{"index": 0, "op": "SCMP_CMP_LE", "value": 0x8000_0000_0000_0000u64},
                      {"index": 0, "op": "SCMP_CMP_LE", "value": 3}]},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "op": "SCMP_CMP_GT", "value": 5}]}
        ]
    }));
    assert_eq!(eval(&p, X86_64, 9, a0(0xffff_ffff)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, 9, a0(2)), RET_TRACE | 1);
    assert_eq!(eval(&p, X86_64, 9, a0(0x1_0000_0000)), RET_ALLOW);
    assert_eq!(eval(&p, X86_64, 9, a0(u64::MAX)), RET_ALLOW);
}

#[test]
fn every_rule_counts_unlike_libseccomp_pruning() {
    // libseccomp 2.5/2.6 prunes the LOG rule away as "redundant" on x32; it is not.
    let p = build(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 3,
        "architectures": ["SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "op": "SCMP_CMP_GT", "value": 255},
                      {"index": 1, "op": "SCMP_CMP_NE", "value": 0x1_0000_0000u64}]},
            {"names": ["mmap"], "action": "SCMP_ACT_LOG",
             "args": [{"index": 2, "op": "SCMP_CMP_GE", "value": 2},
                      {"index": 1, "op": "SCMP_CMP_EQ", "value": 0x1_0000_0000u64},
                      {"index": 0, "op": "SCMP_CMP_NE", "value": 0x8000_0000_0000_0000u64}]}
        ]
    }));
    assert_eq!(eval(&p, X86_64, X32_BIT | 9, [3, 0, 5, 0, 0, 0]), RET_LOG);
    assert_eq!(eval(&p, X86_64, X32_BIT | 9, [3, 7, 5, 0, 0, 0]), RET_ALLOW);
}
