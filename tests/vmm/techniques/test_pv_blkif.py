"""The split block device under ``pv``: guests/tests/pv-blk reads and writes the disk
image through the blkif ring and its grant table, and every request that abuses
a grant is refused by the backend."""

from __future__ import annotations

from trapvisor.guests import build_guest
from trapvisor.vmm.techniques.pv.technique import Pv

REFUSED = ["read into a read-only grant", "grant reference outside the table",
           "grant of a frame it does not own", "grant to another domain",
           "entry without permit_access", "read into its page directory", "12 segments",
           "sector past the disk", "last_sect 8"]


def fnv(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def lines(output: bytes) -> dict[str, str]:
    out = {}
    for line in output.decode().splitlines():
        name, _, value = line[len("pv-blk: "):].rpartition(" ")
        out[name] = value
    return out


def test_reads_and_writes_reach_the_image_and_grant_abuse_is_refused(tmp_path):
    image = tmp_path / "disk.img"
    original = bytes((i * 131 + 7) & 0xFF for i in range(64 * 512))
    image.write_bytes(original)
    m = Pv.build(str(build_guest("pv-blk")), disk=str(image))
    hole = m.hole.snapshot()
    r = m.run(20_000_000)
    got = lines(r.output)
    assert r.exit_code == 1 and r.stop_reason == "shutdown"
    assert got["sectors"] == "64" and got["setup_table status"] == "0"
    assert got["read"] == "0" and int(got["fnv"], 16) == fnv(original[:4096])
    assert got["write"] == "0"
    after = image.read_bytes()
    assert after[16 * 512:24 * 512] == bytes((i * 7 + 3) & 0xFF for i in range(4096))
    assert after[:16 * 512] == original[:16 * 512] and after[24 * 512:] == original[24 * 512:]
    for name in REFUSED:
        assert got[name] == "-1", name
    assert got["unknown operation"] == "-2"
    assert m.blk.requests == 2 + len(REFUSED) + 1 and m.blk.errors == len(REFUSED) + 1
    assert m.hole.snapshot() == hole and m.frames.check() == []


def test_without_a_disk_there_is_no_block_device():
    r = Pv.build(str(build_guest("pv-blk"))).run(5_000_000)
    assert b"pv-blk: no block device" in r.output and r.exit_code == 3   # 2 x 1 + 1
