"""Fault injection for the printer emulator (host_tools/printer_emu.py): which faults are
on, what they mean for "online", and the status bytes the printer answers with.

The fault flags and their rules live here; what a fault *does* to the paper and the line
(a cover opened mid-receipt interrupts it, a power cut clears the buffers, power back on
sends XON) is the emulator's, which applies it after `update()` reports the change.
"""

STATUS_FIXED = 0x12  # the fixed bits of every DLE EOT reply: 0xx1xx10

# GS I n: the identity the emulator reports (Epson: 1/2/3 model/type/version bytes,
# 65.. the "_text NUL" blocks)
IDENTITY = {1: b"\x20", 49: b"\x20", 2: b"\x03", 50: b"\x03", 3: b"\x01", 51: b"\x01",
            65: b"_1.00\x00", 66: b"_REFUND\x00", 67: b"_REFUND-EMU\x00",
            68: b"_0000000001\x00", 69: b"_GB18030\x00"}

FLAGS = ("paper_out", "near_end", "cover_open", "offline", "no_status", "bad_status",
         "cutter_error", "dead")


class Fault(ValueError):
    pass


class PrinterFaults:
    """The fault state. Every flag is a plain attribute; `paper_left` counts printed lines
    until the paper ends (None: a full roll); `slow` divides the paper speed."""

    def __init__(self):
        for name in FLAGS:
            setattr(self, name, False)
        self.paper_left = None
        self.slow = 1.0

    def update(self, paper_out=None, paper_out_after=None, near_end=None, cover_open=None,
               offline=None, no_status=None, slow=None, cutter_error=None, dead=None,
               bad_status=None):
        """Change faults; arguments left at None keep their current value. paper_out=False
        loads paper (and clears paper_out_after unless given). Bad values raise Fault
        before anything changes. Returns (cover_opened, powered_off, powered_on)."""
        if paper_out_after is not None and int(paper_out_after) < 0:
            raise Fault("paper_out_after must be >= 0")
        if slow is not None and float(slow) <= 0:
            raise Fault("slow must be > 0")
        was_cover, was_dead = self.cover_open, self.dead
        if paper_out is not None:
            self.paper_out = bool(paper_out)
            if not paper_out and paper_out_after is None:
                self.paper_left = None
        if paper_out_after is not None:
            self.paper_left = int(paper_out_after)
        if slow is not None:
            self.slow = float(slow)
        for name, v in (("near_end", near_end), ("cover_open", cover_open), ("offline", offline),
                        ("no_status", no_status), ("bad_status", bad_status),
                        ("cutter_error", cutter_error), ("dead", dead)):
            if v is not None:
                setattr(self, name, bool(v))
        return (self.cover_open and not was_cover, self.dead and not was_dead,
                was_dead and not self.dead)

    def online(self):
        return not (self.paper_out or self.cover_open or self.offline or self.cutter_error
                    or self.dead)

    def as_dict(self):
        return {"paper_out": self.paper_out, "paper_left": self.paper_left,
                "near_end": self.near_end, "cover_open": self.cover_open,
                "offline": self.offline, "no_status": self.no_status,
                "bad_status": self.bad_status, "slow": self.slow,
                "cutter_error": self.cutter_error, "dead": self.dead}

    # ---------------------------------------------------------------- status replies
    def status_byte(self, n):
        """Epson DLE EOT n reply (fixed bits: 0xx1xx10), or None for an unknown n."""
        b = STATUS_FIXED
        if n == 1:  # printer status
            if not self.online():
                b |= 0x08
            if self.cutter_error:
                b |= 0x20  # waiting for online recovery
        elif n == 2:  # offline cause
            if self.cover_open:
                b |= 0x04
            if self.paper_out:
                b |= 0x20  # printing stopped by paper end
            if self.cutter_error:
                b |= 0x40  # error occurred
        elif n == 3:  # error cause
            if self.cutter_error:
                b |= 0x08  # autocutter error
        elif n == 4:  # roll paper sensor
            if self.near_end:
                b |= 0x0C
            if self.paper_out:
                b |= 0x60
        else:
            return None
        return b

    def _silent(self):
        return self.no_status or self.dead

    def dle_eot(self, n):
        """The bytes sent for a real-time DLE EOT n, or None (no answer)."""
        b = self.status_byte(n)
        if b is None or self._silent():
            return None
        if self.bad_status:
            b |= 0x80  # bit 7 is fixed 0: the reply no longer matches 0xx1xx10
        return bytes((b,))

    def asb(self):
        """The 4 bytes of an automatic status back (Epson layout, fixed bits: 0xx1xx00
        then three 0xx0xxxx), or None when the printer sends no status."""
        if self._silent():
            return None
        b1 = 0x10 | (0 if self.online() else 0x08) | (0x20 if self.cover_open else 0)
        b2 = 0x08 if self.cutter_error else 0  # autocutter error
        b3 = (0x03 if self.near_end else 0) | (0x0C if self.paper_out else 0)
        if self.bad_status:
            b1 |= 0x80
        return bytes((b1, b2, b3, 0))

    def gs_r(self, n):
        """The bytes sent for an in-band GS r n, or None (no answer)."""
        if self._silent():
            return None
        if n in (1, 49):  # paper sensor, Epson layout: bit4 fixed 0
            return bytes(((0x03 if self.near_end else 0) | (0x0C if self.paper_out else 0),))
        if n in (2, 50):  # drawer kick connector
            return b"\x00"
        return None

    def gs_i(self, n):
        """The bytes sent for GS I n (printer identity), or None (no answer)."""
        if self._silent():
            return None
        return IDENTITY.get(n)
