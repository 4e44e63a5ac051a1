# Virtual board flash: a littlefs block device backed by an image file.
#
# It counts every read, program and erase, and can cut power at the k-th
# program-or-erase (counted together, 1-based), optionally leaving that block torn.
# After the cut the device is dead: every call returns -5 (EIO) without allocating,
# because MicroPython's finalisers may still write to it with the heap locked.
from micropython import const

_EIO = const(-5)
_IOCTL_COUNT = const(4)
_IOCTL_SIZE = const(5)
_IOCTL_ERASE = const(6)


class FlashDev:
    def __init__(self, path, block_size=4096, block_count=256, cut_at=0, torn=False):
        self.bs = block_size
        self.n = block_count
        self.cut_at = cut_at  # 0 = never
        self.torn = torn
        self.dead = False
        self.created = False
        # Counters: reads, programs, erases, bytes read, bytes programmed.
        self.reads = 0
        self.progs = 0
        self.erases = 0
        self.rbytes = 0
        self.pbytes = 0
        # Erase pattern, written in pieces: a whole-block pattern would cost the bench
        # heap 4 KB a real board's flash driver (in C) does not take.
        self._ff = b"\xff" * 256
        size = block_size * block_count
        try:
            f = open(path, "r+b")
            f.seek(0, 2)
            have = f.tell()
        except OSError:
            f = open(path, "w+b")
            have = 0
            self.created = True
        if have < size:
            # A new (or short) image reads as erased NOR flash.
            f.seek(have)
            left = size - have
            while left:
                k = min(left, len(self._ff))
                f.write(self._ff[:k])
                left -= k
        self.f = f

    def ops(self):
        return self.progs + self.erases

    def stats(self):
        return {
            "reads": self.reads, "programs": self.progs, "erases": self.erases,
            "bytes_read": self.rbytes, "bytes_programmed": self.pbytes,
            "dead": self.dead,
        }

    def _cut_now(self):
        # True when this program/erase is the one the power cut lands on.
        return self.cut_at and self.progs + self.erases == self.cut_at

    def readblocks(self, block, buf, off=0):
        if self.dead:
            return _EIO
        self.reads += 1
        self.rbytes += len(buf)
        self.f.seek(block * self.bs + off)
        self.f.readinto(buf)
        return 0

    def writeblocks(self, block, buf, off=None):
        if self.dead:
            return _EIO
        if off is None:
            # Block-erase-and-write interface (FAT): erase counts as its own op.
            off = 0
            r = self.ioctl(_IOCTL_ERASE, block)
            if r:
                return r
        self.progs += 1
        if self._cut_now():
            self.dead = True
            if self.torn:
                # Power dropped half way through the page program.
                self.f.seek(block * self.bs + off)
                self.f.write(memoryview(buf)[: len(buf) // 2])
            return _EIO
        self.pbytes += len(buf)
        self.f.seek(block * self.bs + off)
        self.f.write(buf)
        return 0

    def ioctl(self, op, arg):
        if op == _IOCTL_COUNT:
            return self.n
        if op == _IOCTL_SIZE:
            return self.bs
        if op == _IOCTL_ERASE:
            if self.dead:
                return _EIO
            self.erases += 1
            self.f.seek(arg * self.bs)
            if self._cut_now():
                self.dead = True
                if self.torn:
                    self._fill(self.bs // 2)
                return _EIO
            self._fill(self.bs)
            return 0
        return 0  # init, deinit, sync: nothing to do for a file

    def _fill(self, n):
        ff = self._ff
        while n > 0:
            k = min(n, len(ff))
            self.f.write(ff if k == len(ff) else memoryview(ff)[:k])
            n -= k

    def close(self):
        self.f.close()
