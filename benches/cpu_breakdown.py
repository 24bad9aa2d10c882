#!/usr/bin/env python3
"""Where a relayed message's CPU goes in `sealpost serve`, from a `perf` capture with call graphs.

    ./target/release/sealpost bench compare --rounds 1 &      # start a load
    perf record -F 499 --call-graph dwarf,32768 -p "$(pgrep -f 'sealpost serve')" -o serve.data -- sleep 5
    perf script -i serve.data > serve.txt                     # during sealpost's round
    python3 benches/cpu_breakdown.py serve.txt

Each sample counts for the innermost frame of its stack that names one of the parts below (the
first part listed wins when one frame names several), so the shares add up to 100%. A sample
anywhere inside an fsync or rename system call, or in a wait for a directory fsync that another
thread makes for it (group commit), counts for the queue files, whatever its innermost frame:
the thread switches while an fsync waits for the disk are the fsync's cost, not a hand-off
between threads.
"""
import collections
import re
import sys

PARTS = [
    ("TLS handshake signature (RSA-2048)", ["rsaz", "RSA_sign", "rsa_", "bn_mul", "BN_"]),
    ("TLS key exchange (X25519)", ["curve25519", "x25519"]),
    ("TLS record encryption (AES-GCM)", ["aes_gcm", "aes_hw", "gcm_"]),
    ("TLS key schedule and transcript hashes",
     ["hkdf", "Hkdf", "sha512_block", "SHA512", "sha256_block_data_order_hw", "HMAC", "hash::Context"]),
    ("other TLS (rustls state machine, certificates)", ["rustls::", "webpki"]),
    ("queue files: write, fsync, rename, unlink",
     ["sealpost::queue::", "__x64_sys_fsync", "__x64_sys_unlink", "__x64_sys_rename",
      "__x64_sys_openat", "__x64_sys_statx", "ext4_"]),
    ("logging, message trace, metrics", ["tracing", "TraceLog", "telemetry", "prometheus", "serde_json"]),
    ("rules, header handling (cleanup)", ["sealpost::cleanup", "sealpost::rules", "mail_parser"]),
    ("thread hand-offs (futex, scheduler)",
     ["__x64_sys_futex", "finish_task_switch", "schedule", "futex", "park", "Condvar"]),
    ("socket I/O (kernel TCP, epoll)",
     ["tcp_", "recvfrom", "sendto", "sys_write", "sys_writev", "sys_read", "epoll", "sock_"]),
    ("SMTP protocol (both directions)", ["sealpost::smtp::"]),
    ("memory allocator", ["malloc", "_int_free", "cfree", "realloc", "madvise"]),
]

# Calls whose whole cost (the switches while they wait included) is the queue files'.
QUEUE_SYSCALLS = ["__x64_sys_fsync", "__x64_sys_rename", "group_sync::GroupSync::sync"]


def main(path):
    counts = collections.Counter()
    total = 0
    for sample in open(path, errors="replace").read().split("\n\n"):
        frames = [re.sub(r"^\s*[0-9a-f]+ ", "", l).strip() for l in sample.strip().split("\n")[1:]]
        if not frames:
            continue
        total += 1
        part = "other"
        if any(k in frame for frame in frames for k in QUEUE_SYSCALLS):
            frames = [QUEUE_SYSCALLS[0]]
        for frame in frames:
            named = [name for name, keys in PARTS if any(k in frame for k in keys)]
            if named:
                part = named[0]
                break
        counts[part] += 1
    print(f"{total} samples")
    for part, n in counts.most_common():
        print(f"{100 * n / max(total, 1):5.1f}%  {part}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: cpu_breakdown.py PERF_SCRIPT_OUTPUT")
    main(sys.argv[1])
