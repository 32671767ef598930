#!/usr/bin/env python3
"""Writes the seed inputs of the `connection` fuzz target into corpus-seeds/connection/.

Input layout (fuzz_targets/connection.rs): byte 0 = flags (bit 0: the target sends a valid HELLO
first; bit 1: 1 ms pause between writes; bit 2: body repeated to 40 KiB), byte 1 = split points (two nibbles, sixteenths of the
body), then the body. Frames follow PROTOCOL.md §2.1: u32 length, opcode, u32 request id, payload.
"""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "connection")


def frame(opcode, rid, payload=b""):
    return struct.pack(">IBI", 5 + len(payload), opcode, rid) + payload


def hello(rid=1, version=1):
    return frame(0x01, rid, b"OFCR" + struct.pack(">HH", version, 0))


def lock(rid, name, timeout=0xFFFFFFFF, queue_max=0):
    return frame(0x03, rid, struct.pack(">HII", 0, timeout, queue_max) + name)


def unlock(rid, name):
    return frame(0x04, rid, name)


def listing(opcode, rid, prefix=b"", max_=0):
    return frame(opcode, rid, struct.pack(">I", max_) + prefix)


PING, RESET, LOCKS, CONNECTIONS, MY_LOCKS, STATS, AUTH, TOP = 2, 5, 6, 7, 8, 9, 10, 11

seeds = {
    # The target sends HELLO; LOCK/UNLOCK pipelined behind it, split across three writes.
    "hello_lock_unlock": bytes([0b01, 0x48])
    + lock(2, b"a")
    + lock(3, b"b", timeout=0)
    + unlock(4, b"a")
    + frame(MY_LOCKS, 5)
    + frame(PING, 6, b"pad"),
    # HELLO in the body itself, every request kind, writes split mid-frame with pauses.
    "raw_every_request": bytes([0b10, 0x3B])
    + hello(7)
    + frame(PING, 8)
    + lock(9, b"x", timeout=0, queue_max=1)
    + lock(10, b"x")
    + listing(LOCKS, 11)
    + listing(CONNECTIONS, 12, b"127.")
    + frame(STATS, 13)
    + frame(TOP, 14, struct.pack(">I", 3))
    + frame(AUTH, 15, b"secret")
    + frame(RESET, 16)
    + unlock(17, b"x"),
    # Contention with the bystander: try-once is TIMED_OUT, queue_max 1 is QUEUE_MAXED, and a
    # wait that the close ends.
    "contend_bystander": bytes([0b01, 0x00])
    + lock(2, b"bystander", timeout=0)
    + lock(3, b"bystander", timeout=10, queue_max=1)
    + lock(4, b"bystander", timeout=1000)
    + lock(5, b"bystander")
    + unlock(6, b"bystander"),
    # Non-fatal errors after the handshake, then a fatal frame length.
    "errors_then_fatal": bytes([0b01, 0x88])
    + frame(0x42, 2)
    + frame(PING, 0)
    + lock(3, b"")
    + lock(4, b"\x01ctl")
    + frame(0x03, 5, b"\x00\x01")
    + frame(MY_LOCKS, 6, b"junk")
    + struct.pack(">I", 0x01000000),
    # JSON compatibility mode (first byte '{').
    "json_lines": bytes([0b00, 0x59])
    + b'{"command":"lock","name":"a","timeout":0}\n'
    + b'{"command":"lock","name":"bystander","timeout":0}\n'
    + b'{"command":"locks"}\n'
    + b'{"command":"connections"}\r\n'
    + b'{"command":"my_locks"}\n'
    + b'{"command":"keep_alive"}\n'
    + b'not json\n'
    + b'{"command":"nope"}\n'
    + b'{"command":"unlock","name":"a"}\n'
    + b'{"command":"reset"}\n',
    # One PING repeated to 40 KiB: 4552 pipelined requests, past the per-wake-up budget of 4096.
    "pings_past_budget": bytes([0b101, 0x00]) + frame(PING, 9),
    # A holder that goes silent past max_idle (flag bit 3): its lock must go with it.
    "idle_holder": bytes([0b1001, 0x00]) + lock(2, b"x"),
    # Strangers: HTTP and a TLS ClientHello (PROTOCOL.md §2.6).
    "http_get": bytes([0b00, 0x00]) + b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls_client_hello": bytes([0b00, 0x00]) + bytes.fromhex("160301020001000001fc0303"),
}

os.makedirs(HERE, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {HERE}")
