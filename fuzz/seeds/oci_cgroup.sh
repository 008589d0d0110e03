#!/usr/bin/env bash
# Seeds for oci_cgroup_resources (linux.resources JSON) and oci_cgroup_files (mountinfo,
# /proc/self/cgroup, devices.list and statistics texts, cgroupsPaths).
set -euo pipefail
r=$corpus/oci_cgroup_resources
f=$corpus/oci_cgroup_files
mkdir -p "$r" "$f"
cat >"$r/seed-full.json" <<'JSON'
{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
 {"allow":true,"type":"c","major":136,"access":"rwm"},{"allow":true,"type":"b","access":"m"}],
 "memory":{"limit":67108864,"reservation":33554432,"swap":134217728,"kernel":1,"kernelTCP":1,
  "swappiness":10,"disableOOMKiller":true,"useHierarchy":true},
 "cpu":{"shares":1024,"quota":50000,"period":100000,"burst":1000,"idle":0,"realtimeRuntime":950,
  "realtimePeriod":1000,"cpus":"0-1","mems":"0"},
 "pids":{"limit":64},
 "blockIO":{"weight":500,"leafWeight":300,"weightDevice":[{"major":8,"minor":0,"weight":200,"leafWeight":100}],
  "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}],
  "throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":0}]},
 "hugepageLimits":[{"pageSize":"2MB","limit":4194304},{"pageSize":"1GB","limit":-1}],
 "network":{"classID":1048577,"priorities":[{"name":"eth0","priority":5}]},
 "rdma":{"mlx5_0":{"hcaHandles":3,"hcaObjects":10000}},
 "unified":{"memory.high":"max","hugetlb.2MB.max":"max"}}
JSON
printf '%s' '{"devices":[{"allow":true,"access":"rwm"},{"allow":false,"type":"c","major":1,"minor":5,"access":"r"}]}' >"$r/seed-allow-deny.json"
printf '%s' '{"memory":{"limit":-1,"swap":0},"cpu":{"quota":-1},"pids":{"limit":-1}}' >"$r/seed-unlimited.json"
printf '%s' '{"unified":{"cgroup.procs":"1","../x":"1"}}' >"$r/seed-unified-bad.json"
cat >"$f/seed-mountinfo" <<'TXT'
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 /sub /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
4:memory:/sub/x
3:cpu,cpuacct:/
0::/a/../b
TXT
printf 'c 1:3 rwm\nc *:* m\nb 8:* r\n' >"$f/seed-devices-list"
printf 'user 10\nsystem 20\ncache 4096\nnr_periods 3\noom_kill 1\nfrozen 1\n' >"$f/seed-keyed"
printf '8:0 Read 10\n8:0 Write 5\nTotal 15\n8:16 rbytes=1 wbytes=2 rios=3 wios=4\n' >"$f/seed-io"
printf 'system.slice:runc:abc' >"$f/seed-slice"
printf 'a-b-c.slice:docker:x' >"$f/seed-slice-nested"
printf '/a/../../etc' >"$f/seed-escape"
