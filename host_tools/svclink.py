"""Service link on the terminal's USB console, host side (docs/service-link.md).

The frame codec mirrors firmware/refund/svcframe.py; `Client` talks to the board's
service task over pyserial (`--port` is a tty path or any pyserial URL):

    c = Client("/dev/ttyACM0")
    info = c.call("info")                                  # one reply, dict
    for hdr, body in c.stream({"cmd": "logs", "since": 1}): ...   # a multi-frame reply
    c.privileged("reprint", "rid", rid, tech_key)          # challenge + HMAC
"""
import binascii
import hashlib
import hmac
import json
import random
import time

MARK, DLE, CTRL_C = 0x1E, 0x10, 0x03
ESCAPED = frozenset((0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x13, 0x1E))
MAX_REQUEST = 512
MAX_REPLY = 2048
FRAME_TIMEOUT = 1.0


def escape(data):
    out = bytearray()
    for b in data:
        if b in ESCAPED:
            out += bytes((DLE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def frame(payload):
    """payload bytes -> one frame (marker, escaped LEN + payload + CRC32)."""
    payload = bytes(payload)
    if len(payload) > 0xFFFF:
        raise ValueError("payload %d B too long" % len(payload))
    body = len(payload).to_bytes(2, "big") + payload
    body += (binascii.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes((MARK,)) + escape(body)


def split_payload(payload):
    """payload -> (header dict, body bytes). ValueError if the header is not a JSON object."""
    payload = bytes(payload)
    head, nl, body = payload.partition(b"\n")
    hdr = json.loads(head.decode("utf-8"))
    if not isinstance(hdr, dict):
        raise ValueError("header is not a JSON object")
    return hdr, body


class Decoder:
    """Streaming decoder: feed(bytes) -> list of payloads with a good CRC. Bytes between
    frames are text (log lines, REPL) and go to `text`. Same rules as the firmware's:
    a raw byte of E (other than 0x10) inside a frame, a bad CRC, a 0x1E before the frame
    is complete, more than max_len payload bytes, or a frame not completed within
    frame_timeout seconds drops it (counted in stats); a damaged frame is discarded up to
    its announced end, the next 0x1E or the time limit."""

    def __init__(self, max_len=MAX_REPLY, frame_timeout=FRAME_TIMEOUT, clock=time.monotonic):
        self.max_len = max_len
        self.frame_timeout = frame_timeout
        self.clock = clock
        self.stats = {"frames": 0, "bad_crc": 0, "truncated": 0, "oversized": 0, "bad_byte": 0}
        self.text = bytearray()
        self.breaks = 0  # 0x03 bytes outside frames (a Ctrl-C on the board)
        self.marks = 0  # frame starts seen, whole or not
        self._st = 0  # 0 text, 1 in frame, 2 discarding a damaged frame
        self._esc = False
        self._buf = bytearray()
        self._n = 0
        self._need = 0
        self._t0 = 0.0

    @property
    def in_frame(self):
        self.expire()
        return self._st != 0

    def expire(self, now=None):
        if self._st and (self.clock() if now is None else now) - self._t0 > self.frame_timeout:
            self._st = 0
            self.stats["truncated"] += 1
            return True
        return False

    def want(self):
        if not self.in_frame or not self._need:
            return 1
        return self._need - self._n

    def _fail(self, key):
        self.stats[key] += 1
        self._st = 0 if self._need and self._n >= self._need else 2

    def push(self, b):
        st = self._st
        if b == CTRL_C and st and self.expire():
            st = 0
        if b == MARK:
            self.marks += 1
            if st == 1:
                self.stats["truncated"] += 1
            self._st, self._esc, self._n, self._need = 1, False, 0, 0
            self._buf = bytearray()
            self._t0 = self.clock()
            return None
        if st == 0:
            self.text.append(b)
            self.breaks += b == CTRL_C
            return None
        if b in ESCAPED and b != DLE:
            if st == 1:
                self._fail("bad_byte")
            return None
        if b == DLE and not self._esc:
            self._esc = True
            return None
        if self._esc:
            b ^= 0x20
            self._esc = False
        self._n += 1
        if st == 2:
            if self._need and self._n >= self._need:
                self._st = 0
            return None
        self._buf.append(b)
        n = self._n
        if n == 2:
            ln = (self._buf[0] << 8) | b
            self._need = ln + 6
            if ln > self.max_len:
                self._fail("oversized")
            return None
        if n < 2 or n < self._need:
            return None
        self._st = 0
        buf = self._buf
        if binascii.crc32(bytes(buf[:-4])) & 0xFFFFFFFF == int.from_bytes(buf[-4:], "big"):
            self.stats["frames"] += 1
            return bytes(buf[2:-4])
        self.stats["bad_crc"] += 1
        return None

    def feed(self, data):
        self.expire()
        out = []
        for b in bytes(data):
            p = self.push(b)
            if p is not None:
                out.append(p)
        return out


# ---- client ------------------------------------------------------------------------------

class LinkError(Exception):
    """No usable answer: reason is no_port, timeout, bad_crc or link_lost."""

    def __init__(self, reason, text):
        super().__init__(text)
        self.reason = reason


_SHORT_OF_RAM = 5  # "memory" answers asked again before giving up


class ServiceError(Exception):
    """The board answered ok=false: err is the reply's code (unknown_rid, auth, ...)."""

    def __init__(self, reply):
        super().__init__(reply.get("text") or reply.get("err") or "refused")
        self.err = reply.get("err", "error")
        self.reply = reply


def mac_for(tech_key, nonce, cmd, arg=""):
    """hex(HMAC-SHA256(tech_key, nonce + "|" + cmd + "|" + arg))."""
    key = bytes.fromhex(tech_key) if isinstance(tech_key, str) else bytes(tech_key)
    return hmac.new(key, ("%s|%s|%s" % (nonce, cmd, arg)).encode(), hashlib.sha256).hexdigest()


class Client:
    def __init__(self, port, baud=115200, timeout=3.0, tries=3, log=None, frame_timeout=FRAME_TIMEOUT):
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.tries = max(1, tries)
        self.log = log or (lambda msg: None)
        self.frame_timeout = frame_timeout
        self._id = random.randint(1, 2 ** 30)
        self.dec = Decoder(frame_timeout=frame_timeout)
        self.ser = None
        self._open()

    def _open(self):
        import serial

        try:
            self.ser = serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError("no_port", "cannot open %s: %s" % (self.port, e)) from None
        self.dec = Decoder(frame_timeout=self.frame_timeout)

    def close(self):
        if self.ser is not None:
            try:
                self.ser.close()
            finally:
                self.ser = None

    def new_id(self):
        self._id = self._id % (2 ** 31 - 1) + 1
        return self._id

    def send(self, req):
        data = json.dumps(req, separators=(",", ":")).encode()
        if len(data) > MAX_REQUEST:
            raise ValueError("request of %d B > %d" % (len(data), MAX_REQUEST))
        if self.ser is None:
            self._open()
        self.ser.write(frame(data))
        self.ser.flush()

    def _frames(self, rid, idle):
        """Yield (header, body) of frames for request id rid until idle s pass without one."""
        import serial

        end = time.monotonic() + idle
        while True:
            if time.monotonic() > end:
                return
            try:
                data = self.ser.read(max(1, min(4096, self.ser.in_waiting or 1)))
            except (serial.SerialException, OSError) as e:
                raise LinkError("link_lost", "link lost: %s" % e) from None
            if not data:
                self.dec.expire()
                continue
            for p in self.dec.feed(data):
                try:
                    hdr, body = split_payload(p)
                except ValueError:
                    continue
                if hdr.get("id") != rid:
                    continue  # a late reply to an abandoned request
                end = time.monotonic() + idle
                yield hdr, body
            if len(self.dec.text) > 65536:
                del self.dec.text[:-4096]

    def stream(self, req, tries=None):
        """Send req (an id is added) and yield its reply frames (header, body) in order,
        through the frame with `end` (or the only one). A timeout or a missing part sends
        the same request again (same id: the board restarts the reply at part 0, which
        is yielded again: callers that resume by cursor use stream(..., tries=1))."""
        req = dict(req)
        req.setdefault("id", self.new_id())
        tries = self.tries if tries is None else tries
        why = "timeout"
        bad0 = self.dec.stats["bad_crc"] + self.dec.stats["bad_byte"] + self.dec.stats["truncated"]
        attempt, short = -1, 0
        while attempt + 1 < tries:
            attempt += 1
            if attempt:
                self.log("%s: %s; sending again (try %d of %d)" % (req["cmd"], why, attempt + 1, tries))
            try:
                self.send(req)
            except LinkError:
                raise
            except Exception as e:  # serial errors on write: reopen and try again
                self.close()
                why = "link lost (%s)" % e
                time.sleep(0.2)
                continue
            want = 0
            for hdr, body in self._frames(req["id"], self.timeout):
                part = hdr.get("part")
                if part is not None and part != want:
                    if part == 0:
                        want = 0  # the reply restarted
                    else:
                        why = "part %s missing" % want
                        break
                if hdr.get("ok") is False:
                    if hdr.get("err") == "memory" and want == 0 and short < _SHORT_OF_RAM:
                        # "no RAM for this reply now: ask again": nothing of it was yielded,
                        # so asking again is safe for every caller; it costs no try
                        short += 1
                        attempt -= 1
                        why = "the board is short of RAM for this reply"
                        time.sleep(0.5)
                        break
                    err = ServiceError(hdr)
                    err.attempt = attempt
                    raise err
                yield hdr, body
                want += 1
                if part is None or hdr.get("end"):
                    return
            else:
                bad = self.dec.stats["bad_crc"] + self.dec.stats["bad_byte"] + self.dec.stats["truncated"]
                why = "damaged frames (bad CRC)" if bad > bad0 else "no reply within %.1f s" % self.timeout
        bad = self.dec.stats["bad_crc"] + self.dec.stats["bad_byte"] + self.dec.stats["truncated"]
        if bad > bad0:
            raise LinkError("bad_crc", "%s: bad CRC after %d tries" % (req["cmd"], tries))
        raise LinkError("timeout", "%s: no reply from the board after %d tries (%.1f s each)"
                        % (req["cmd"], tries, self.timeout))

    def call(self, cmd, **args):
        """One request -> its reply header (dict; a multi-frame reply: the headers' union,
        lists joined, with the bodies joined under "_body")."""
        req = dict(args, cmd=cmd)
        out, body = {}, bytearray()
        for hdr, b in self.stream(req):
            if hdr.get("part") == 0:
                out, body = {}, bytearray()  # the reply (re)started
            for k, v in hdr.items():
                if isinstance(v, list) and isinstance(out.get(k), list):
                    out[k] = out[k] + v
                else:
                    out[k] = v
            body += b
        if body:
            out["_body"] = bytes(body)
        return out

    def probe(self, timeout=0.6, strict=False):
        """True if the port is a console: a service task answers `info` within timeout
        (each try), or it sends service frames or log text (an ECR port sends nothing
        unasked but ECR frames). Harmless on an ECR port: no STX or ETX is ever in a
        service frame. When in doubt it says console: a service request to an ECR port
        only times out, an ECR frame to a console would stop the application.
        strict: only an answer counts (a REPL echoes what it gets as text)."""
        saved = self.timeout
        self.timeout = timeout
        try:
            self.call("info")
            return True
        except ServiceError:
            return True
        except LinkError:
            if strict:
                return False
            text = bytes(self.dec.text)
            return self.dec.marks > 0 or (b"\n" in text and 0x02 not in text)
        finally:
            self.timeout = saved

    def privileged(self, cmd, tech_key, argname=None, arg=None, **extra):
        """challenge, then cmd with nonce and mac. The nonce is single use, so the command
        is sent with the same nonce (same id) on a retry; `auth` then means it may have
        been executed by the first try."""
        nonce = self.call("challenge")["nonce"]
        req = dict(extra, cmd=cmd, nonce=nonce)
        if argname:
            req[argname] = arg
        req["mac"] = mac_for(tech_key, nonce, cmd, "" if arg is None else str(arg))
        try:
            return self.call(**req)
        except ServiceError as e:
            if e.err == "auth" and getattr(e, "attempt", 0):
                e.args = ("authentication refused on a resend (the nonce is single use): "
                          "the first try may have run; check before repeating",)
            raise
