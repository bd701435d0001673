"""placeholder"""
def is_bzimage(data: bytes) -> bool:
    return len(data) > 0x206 and data[0x202:0x206] == b"HdrS"
def load_linux(*a, **k): raise NotImplementedError
