#!/usr/bin/env bash
# Seeds for oci_seccomp: linux.seccomp objects (runtime-spec JSON) covering every action,
# operator, flag and the x86 family of architectures, as runc would receive them.
set -euo pipefail
d="$corpus/oci_seccomp"
mkdir -p "$d"
cat >"$d/seed-allow-list.json" <<'JSON'
{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
 "syscalls":[{"names":["read","write","exit_group","execve","mmap","openat","close","socketcall","socket"],"action":"SCMP_ACT_ALLOW"},
  {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]},
  {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"op":"SCMP_CMP_MASKED_EQ"}]},
  {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}
JSON
cat >"$d/seed-actions.json" <<'JSON'
{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
 "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":28},{"names":["rmdir"],"action":"SCMP_ACT_KILL"},
  {"names":["unlink"],"action":"SCMP_ACT_KILL_PROCESS"},{"names":["getppid"],"action":"SCMP_ACT_TRAP"},
  {"names":["getuid"],"action":"SCMP_ACT_TRACE","errnoRet":7},{"names":["uname"],"action":"SCMP_ACT_LOG"},
  {"names":["chdir"],"action":"SCMP_ACT_KILL_THREAD"}]}
JSON
cat >"$d/seed-notify.json" <<'JSON'
{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock","listenerMetadata":"m",
 "flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],"syscalls":[{"names":["mkdirat"],"action":"SCMP_ACT_NOTIFY"}]}
JSON
cat >"$d/seed-operators.json" <<'JSON'
{"defaultAction":"SCMP_ACT_TRAP","architectures":["SCMP_ARCH_X86"],"syscalls":[
 {"names":["mmap"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":4096,"op":"SCMP_CMP_GT"},{"index":2,"value":4,"valueTwo":4,"op":"SCMP_CMP_MASKED_EQ"}]},
 {"names":["mmap"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":5,"op":"SCMP_CMP_LE"},{"index":0,"value":3,"op":"SCMP_CMP_LT"}]},
 {"names":["lseek"],"action":"SCMP_ACT_ERRNO","errnoRet":27,"args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_GE"}]},
 {"names":["fcntl"],"action":"SCMP_ACT_LOG","args":[{"index":1,"value":4,"op":"SCMP_CMP_EQ"},{"index":2,"value":0,"op":"SCMP_CMP_NE"}]}]}
JSON
