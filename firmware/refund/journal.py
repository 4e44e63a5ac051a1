# The outbox's files at the frame level (layout: docs/outbox-format.md):
#   j/GGGGGGG/NNNNNNNN  journal: one frame per file, named by its version N, in
#             subdirectory G = N >> 4 (16 a directory). A file of <= 128 B lives inline
#             in littlefs metadata, so appending a record costs one metadata commit
#             (~0.4 KB) instead of rewriting a 4 KB data block.
#   snap, hist  files of many frames, read here frame by frame (re-synchronising past
#             damage); what they mean is the outbox's and the history's business.
# One read buffer serves every frame: reading never allocates per record.
import os
from micropython import const
from refund import record as R

IN_J = const(-1)  # index loc >= 0: offset in snap; IN_J: the latest record is journal file <ver>
_JFAN = const(4)  # 2**4 journal files per subdirectory: littlefs walks a directory
# linearly, so one flat directory of ~250 inline records cost ~5x the reads per change
_S_IFDIR = const(0x4000)


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def remove(p):
    try:
        os.remove(p)
    except OSError:
        pass


class Journal:
    def __init__(self, root, log):
        self.root = root
        self.jdir = root + "/j"
        self.log = log
        self.snap = root + "/snap"
        self.buf = bytearray(R.MAX_FRAME + 128)  # the frame last read (frame() / read())
        self.damaged = 0  # records found damaged since recovery began
        self._made = -1  # journal subdirectory known to exist

    def damage(self, what):
        self.damaged += 1
        self.log("outbox", "DAMAGE " + what, level="ERROR")

    def prepare(self):
        """Recovery's start: directories made, leftovers of a cut compaction gone."""
        for d in (self.root, self.jdir):
            if not exists(d):
                os.mkdir(d)
        remove(self.root + "/snap.tmp")
        remove(self.root + "/hist.tmp")
        self.damaged = 0

    # ---- journal files --------------------------------------------------------------

    def path(self, v):
        return "%s/%07d/%08d" % (self.jdir, v >> _JFAN, v)

    def versions(self):
        """Versions of every journal file, ascending (a list: bounded by compaction, at
        most compact_max + what a cut compaction left). Foreign files are removed."""
        vs = []
        for d in os.ilistdir(self.jdir):
            sub = self.jdir + "/" + d[0]
            if d[1] != _S_IFDIR:
                remove(sub)  # not ours (e.g. an interrupted temp)
                continue
            for t in os.ilistdir(sub):
                try:
                    vs.append(int(t[0]))
                except ValueError:
                    remove(sub + "/" + t[0])
        vs.sort()
        return vs

    def read(self, v):
        """(type, payload) of journal file v, CRC checked; raises R.Corrupt / OSError.
        The payload is a view of the shared buffer: valid until the next read."""
        with open(self.path(v), "rb") as f:
            n = f.readinto(self.buf)
        return R.check(memoryview(self.buf)[:n])

    def drop(self, v):
        remove(self.path(v))

    def records(self, lo, hi):
        """Parsed entry records of journal files lo..hi, ascending; unreadable ones are
        passed over. One dict at a time."""
        for v in range(lo, hi + 1):
            try:
                typ, p = self.read(v)
                if typ == R.T_ENTRY:
                    yield R.parse_entry(p)
            except (R.Corrupt, OSError, ValueError, IndexError):
                pass

    def append(self, v, frame):
        """Write journal file v as one frame; durable when this returns."""
        p = self.path(v)
        try:
            if v >> _JFAN != self._made:
                try:
                    os.mkdir(p[: p.rindex("/")])
                except OSError:
                    pass  # exists (a full flash makes the open below fail instead)
            with open(p, "wb") as f:
                f.write(frame)
        except OSError:
            self._made = -1
            remove(p)  # never leave a half-made record behind (e.g. flash full)
            raise
        self._made = v >> _JFAN

    def rmdirs(self, lo, hi):
        """Journal subdirectories of versions hi down to lo, emptied by compaction, go;
        lo < 0 (recovery): every empty one (a power cut between mkdir and the record
        leaves one). A non-empty one refuses rmdir. Newest first: littlefs makes each
        directory just after its parent in its list of directories and rmdir walks that
        list to the predecessor, so oldest first read every newer one (~70 KB a directory
        with 16 of them, docs/benchmarks.md). No default arguments: their tuple is heap."""
        if lo < 0:
            ds = [d[0] for d in os.ilistdir(self.jdir) if d[1] == _S_IFDIR]
            ds.sort()  # 7 digits with leading zeros: name order is version order
        else:
            ds = range(lo >> _JFAN, (hi >> _JFAN) + 1)
        for i in range(len(ds) - 1, -1, -1):
            d = ds[i]
            try:
                os.rmdir(self.jdir + "/" + d if lo < 0 else "%s/%07d" % (self.jdir, d))
            except OSError:
                pass
        self._made = -1

    # ---- files of many frames (snap, hist) ------------------------------------------

    def frame(self, f):
        """The frame at f's position into the buffer: (type, payload)."""
        b = self.buf
        if f.readinto(memoryview(b)[:1]) != 1:
            raise R.Corrupt("truncated")
        n = b[0]
        if n < 6:
            raise R.Corrupt("length")
        if f.readinto(memoryview(b)[1:n]) != n - 1:
            raise R.Corrupt("truncated")
        return R.check(memoryview(b)[:n])

    def frames(self, f, off, what):
        """Yield (offset, type, payload) of each valid frame from off to the end of f.
        A damaged frame is reported once and skipped by re-synchronising on the next
        offset whose frame CRC holds, so records after the damage are still recovered."""
        end = f.seek(0, 2)
        bad = -1
        while off < end:
            f.seek(off)
            try:
                typ, p = self.frame(f)
            except R.Corrupt as e:
                if bad < 0:
                    bad = off
                    if str(e) != "truncated" or off + 1 < end:
                        self.damage("%s record at %d: %s" % (what, off, e))
                off += 1
                continue
            bad = -1
            yield off, typ, p
            off += self.buf[0]

    def last(self):
        """The frame in the buffer, whole (to copy it to another file as it is)."""
        return memoryview(self.buf)[: self.buf[0]]

    def read_at(self, loc, v):
        """(type, payload) of an index location: snap offset loc, or journal file v."""
        if loc == IN_J:
            return self.read(v)
        with open(self.snap, "rb") as f:
            f.seek(loc)
            return self.frame(f)
