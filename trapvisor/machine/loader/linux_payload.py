"""The compressed kernel inside a Linux bzImage, decompressed on the host.

A bzImage's protected-mode part holds the kernel's own decompressor and, from
boot protocol 2.08 on, says where the compressed vmlinux ELF is:
``payload_offset`` (from the start of the protected-mode code) and
``payload_length`` (Documentation/arch/x86/boot.rst, "Details of Header
Fields").  The formats recognised by their magic numbers are the kernel's
(arch/x86/boot/compressed/Makefile): gzip, xz (with the x86 BCJ filter, which
Python's lzma applies from the stream's own filter chain), and LZ4 in its
legacy frame ("lz4 -l").  Running the kernel's decompressor on an emulated
CPU costs minutes; a loader that decompresses on the host and enters the
vmlinux directly saves them (Firecracker does the same for 64-bit kernels).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct

from ...errors import UserError

LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20


def payload_format(payload: bytes) -> str:
    if payload[:4] == struct.pack("<I", LZ4_LEGACY_MAGIC):
        return "lz4"
    if payload[:2] == b"\x1f\x8b":
        return "gzip"
    if payload[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "unknown"


def _liblz4():
    name = ctypes.util.find_library("lz4") or "liblz4.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    fn = lib.LZ4_decompress_safe
    fn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def lz4_block_python(src: bytes, limit: int) -> bytes:
    """The LZ4 block format (lz4 Block_format.md), decoded in Python: slow, but no library."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        out += src[i:i + lit]
        i += lit
        if i >= n:
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        mlen = token & 15
        if mlen == 15:
            while True:
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        start = len(out) - offset
        if offset >= mlen:
            out += out[start:start + mlen]
        else:                       # overlapping copy: the pattern repeats
            chunk = out[start:]
            reps = -(-mlen // len(chunk))
            out += (chunk * reps)[:mlen]
        if len(out) > limit:
            raise ValueError("LZ4 block larger than its limit")
    return bytes(out)


def lz4_legacy_decompress(payload: bytes) -> bytes:
    """The LZ4 legacy frame the kernel's 'lz4 -l' makes: magic, then (u32 size, block)*.

    The kernel build appends the uncompressed length (4 bytes) after the
    stream; a block header that would run past the end is that trailer.
    """
    fast = _liblz4()
    out = []
    off = 4
    buf = ctypes.create_string_buffer(LZ4_LEGACY_BLOCK) if fast else None
    while off + 4 <= len(payload):
        size = struct.unpack_from("<I", payload, off)[0]
        if size == LZ4_LEGACY_MAGIC:
            off += 4
            continue
        if off + 4 + size > len(payload):
            break
        block = payload[off + 4: off + 4 + size]
        off += 4 + size
        if fast:
            n = fast(block, buf, size, LZ4_LEGACY_BLOCK)
            if n < 0:
                raise UserError("the bzImage's LZ4 payload is corrupt")
            out.append(buf.raw[:n])
        else:
            out.append(lz4_block_python(block, LZ4_LEGACY_BLOCK))
    return b"".join(out)


def decompress_payload(data: bytes, hdr) -> bytes:
    """The vmlinux ELF inside a bzImage (protocol 2.08+: payload_offset/length)."""
    if not hdr.payload_offset:
        raise UserError("this bzImage predates boot protocol 2.08: no payload to decompress",
                        hint="use --linux-entry bzimage")
    start = hdr.pm_offset + hdr.payload_offset
    payload = data[start:start + hdr.payload_length]
    fmt = payload_format(payload)
    if fmt == "lz4":
        return lz4_legacy_decompress(payload)
    if fmt == "gzip":
        import zlib
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    if fmt == "xz":
        import lzma
        return lzma.LZMADecompressor().decompress(payload)
    raise UserError(f"cannot decompress a {fmt} kernel payload on the host",
                    hint="use --linux-entry bzimage (the kernel decompresses itself)")


