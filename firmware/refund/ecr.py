# ECR link: framed request/response between the cash register (ECR) and the terminal
# over a UART. Spec with byte dumps: docs/ecr-link.md. Keep both in step.
#
#   frame   = STX | LEN (u16 big-endian, payload bytes) | PAYLOAD | CRC (u32 big-endian) | ETX
#   CRC     = CRC-32 (IEEE, binascii.crc32) over LEN and PAYLOAD
#   PAYLOAD = pair *(FS pair), pair = key "=" value, printable ASCII, FS = 0x1C
#
# The parser never raises on bad input: bad CRC, bad framing, oversized and truncated
# frames are dropped and counted, and it resynchronises on the next STX. Frames it
# hands out always had a valid CRC. Nothing here decides anything about money.
import asyncio
import time
from binascii import crc32
from micropython import const
from refund.chars import clean, digits, printable

STX = const(0x02)
ETX = const(0x03)
FS = const(0x1C)
MAX_PAYLOAD = const(1024)
_HEAD = const(3)  # STX + LEN
_OVER = const(8)  # STX + LEN + CRC + ETX
_GAP_MS = const(500)  # a partial frame silent this long is truncated
_IDLE_MS = const(20)  # poll interval when a stream reports no data (tty with VMIN=0)
_CHUNK = const(128)

COMMANDS = ("REFUND", "QUERY", "CANCEL", "LIST")


def frame(payload):
    """Wrap payload bytes into one frame."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError("payload %d B > %d" % (n, MAX_PAYLOAD))
    b = bytearray(n + _OVER)
    b[0] = STX
    b[1] = n >> 8
    b[2] = n & 0xFF
    b[3 : 3 + n] = payload
    c = crc32(memoryview(b)[1 : 3 + n]) & 0xFFFFFFFF
    b[3 + n] = c >> 24
    b[4 + n] = (c >> 16) & 0xFF
    b[5 + n] = (c >> 8) & 0xFF
    b[6 + n] = c & 0xFF
    b[7 + n] = ETX
    return bytes(b)


def _clean(v):
    # Values are printable ASCII; anything else (a reply text from an exception, a
    # merchant name) is replaced so the frame stays well formed. No copy when clean.
    return clean(v, MAX_PAYLOAD)


def encode(d):
    """dict -> payload bytes: cmd and seq first, then the other keys sorted (the order
    is not significant to the reader; sorting keeps frames reproducible)."""
    parts = []
    for k in ("cmd", "seq"):
        if k in d and d[k] is not None:
            parts.append(k + "=" + _clean(d[k]))
    for k in sorted(d):
        if k == "cmd" or k == "seq" or d[k] is None:
            continue
        v = d[k]
        if v is True:
            v = 1
        elif v is False:
            v = 0
        parts.append(k + "=" + _clean(v))
    return "\x1c".join(parts).encode()


def _key_ok(k):
    b = k.encode()
    if not 1 <= len(b) <= 16:
        return False
    for c in b:
        if not (0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c == 0x5F):
            return False
    return True


def decode(payload):
    """payload bytes -> (dict, error). error is None for a well-formed payload, else a
    text; the dict then holds the pairs that could be read (a usable "seq" lets the
    caller send a refusal). Never raises."""
    d = {}
    err = None
    b = bytes(payload)
    for c in b:
        if c != FS and not 0x20 <= c <= 0x7E:
            err = "payload has bytes that are not printable ASCII"
            break
    if err:
        # Keep the printable part so the seq may still be found; a bad byte spoils
        # only its own field.
        s = bytes([c if c == FS or 0x20 <= c <= 0x7E else 0 for c in b]).decode()
    else:
        s = b.decode()
    if not s:
        return d, "empty payload"
    for pair in s.split("\x1c"):
        i = pair.find("=")
        if i <= 0:
            err = err or "field without key=value"
            continue
        k = pair[:i]
        v = pair[i + 1 :]
        if not _key_ok(k):
            err = err or "bad field name"
            continue
        if not printable(v):
            err = err or ("field %s is not printable ASCII" % k)
            continue
        if k in d:
            err = err or ("field %s given twice" % k)
            continue
        d[k] = v
    if "seq" in d and not digits(d["seq"]):
        err = err or "seq must be 1 to 9 digits"
        del d["seq"]
    elif "seq" not in d:
        err = err or "no seq"
    return d, err


class Parser:
    """Streaming frame parser with one preallocated buffer. feed(data) -> list of the
    payloads (bytes) of every complete frame with a valid CRC found so far. Garbage
    between frames, bad CRC, bad framing and oversized frames are skipped and counted;
    parsing resynchronises on the next STX (also inside a rejected frame's bytes)."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.max = max_payload
        self.buf = bytearray(max_payload + _OVER)
        self.chunk = bytearray(_CHUNK)  # serve()'s reads
        self.n = 0
        self.stats = {"frames": 0, "bad_crc": 0, "bad_frame": 0, "oversized": 0,
                      "truncated": 0, "garbage": 0}

    def pending(self):
        """Bytes of a partial frame waiting for the rest."""
        return self.n

    def feed(self, data):
        out = []
        mv = memoryview(data)
        i = 0
        size = len(self.buf)
        while i < len(mv):
            k = min(size - self.n, len(mv) - i)
            self.buf[self.n : self.n + k] = mv[i : i + k]
            self.n += k
            i += k
            self._scan(out)
        return out

    def flush(self):
        """The line went quiet with a partial frame buffered: the frame starting at the
        first byte is truncated. Drop that byte and scan the rest again (a bogus length
        from line noise may be hiding complete frames behind it). Returns the payloads
        found, like feed(); call again while pending() stays non-zero and quiet."""
        out = []
        if self.n:
            b = self.buf
            if b[0] == STX:
                self.stats["truncated"] += 1
            else:
                self.stats["garbage"] += 1
            self.n -= 1
            if self.n:
                b[0 : self.n] = memoryview(b)[1 : self.n + 1]
            self._scan(out)
        return out

    def _scan(self, out):
        b = self.buf
        n = self.n
        st = self.stats
        i = 0
        while i < n:
            if b[i] != STX:
                j = i
                while j < n and b[j] != STX:
                    j += 1
                st["garbage"] += j - i
                i = j
                continue
            if n - i < _HEAD:
                break
            ln = (b[i + 1] << 8) | b[i + 2]
            if ln > self.max:
                st["oversized"] += 1
                i += 1
                continue
            total = ln + _OVER
            if n - i < total:
                break
            end = i + total
            if b[end - 1] != ETX:
                st["bad_frame"] += 1
                i += 1
                continue
            c = (b[end - 5] << 24) | (b[end - 4] << 16) | (b[end - 3] << 8) | b[end - 2]
            if crc32(memoryview(b)[i + 1 : end - 5]) & 0xFFFFFFFF != c:
                st["bad_crc"] += 1
                i += 1
                continue
            out.append(bytes(b[i + _HEAD : end - 5]))
            st["frames"] += 1
            i = end
        if i:
            rest = n - i
            if rest:
                b[0:rest] = memoryview(b)[i:n]
            self.n = rest


def refusal(seq, code, text, cmd=None):
    d = {"seq": seq, "err": code, "text": text}
    if cmd:
        d["cmd"] = cmd
    return d


def _reply_frame(rep, seq, log):
    rep["seq"] = seq
    try:
        return frame(encode(rep))
    except ValueError:
        log("ecr", "reply to seq %s too large: refused instead" % seq, level="ERROR")
        return frame(encode(refusal(seq, "internal", "reply too large", rep.get("cmd"))))


async def answer(payload, handler, log, stats=None):
    """One request payload -> reply frame bytes, or None when it is dropped (no usable
    seq). The handler's exceptions become an 'internal' refusal."""
    req, err = decode(payload)
    seq = req.get("seq")
    if seq is None:
        if stats is not None:
            stats["dropped"] = stats.get("dropped", 0) + 1
        log("ecr", "frame of %d B dropped: %s" % (len(payload), err), level="WARN")
        return None
    if err:
        if stats is not None:
            stats["malformed"] = stats.get("malformed", 0) + 1
        log("ecr", "seq %s: malformed request: %s" % (seq, err), level="WARN")
        return _reply_frame(refusal(seq, "bad_request", err, req.get("cmd")), seq, log)
    try:
        rep = handler(req)
        if hasattr(rep, "send"):  # an async handler: a coroutine / generator
            rep = await rep
        if not isinstance(rep, dict):
            raise TypeError("handler returned %s" % type(rep).__name__)
    except Exception as e:
        # Never echo the request (it carries PINs); the exception text is ours.
        log("ecr", "seq %s: handler failed: %r" % (seq, e), level="ERROR")
        rep = refusal(seq, "internal", "terminal error: request not processed", req.get("cmd"))
    if "cmd" not in rep and "cmd" in req:
        rep["cmd"] = req["cmd"]
    return _reply_frame(rep, seq, log)


def streams(stream, writer=None):
    """(reader, writer) asyncio streams for a raw UART/tty object or an existing stream."""
    if hasattr(stream, "drain"):
        return stream, writer or stream
    return asyncio.StreamReader(stream), writer or asyncio.StreamWriter(stream, {})


async def serve(stream, handler, log, writer=None, stop_on_eof=False, stats=None, parser=None):
    """Serve ECR requests from stream until cancelled (or, with stop_on_eof, until the
    stream ends). stream: a raw UART/tty object (non-blocking reads) or an asyncio
    stream; writer: a separate asyncio writer (TCP), else the stream itself.
    handler(req) -> reply dict (or an awaitable of one); req maps field names to
    string values and always has "seq". Bad input never ends it: bad frames are
    dropped, handler errors answered 'internal'. A write error on the stream (OSError)
    is raised: the app's task supervisor restarts the task. Returns the parser stats
    (stop_on_eof). parser: a Parser made once at boot, so a restarted task needs no
    new 1 KB buffer from a heap that may by then be fragmented."""
    r, w = streams(stream, writer)
    p = parser or Parser()
    p.n = 0  # a restart after a failure: whatever was half-read is gone (the ECR resends)
    if stats is None:
        stats = {}
    stats["parser"] = p.stats
    chunk = p.chunk
    last = time.ticks_ms()
    while True:
        frames = None
        if p.pending():
            left = _GAP_MS - time.ticks_diff(time.ticks_ms(), last)
            if left <= 0:
                # Quiet line: whatever is buffered is all there is. Every partial frame
                # in it is truncated; complete ones hiding behind a bogus length count.
                t0 = p.stats["truncated"]
                frames = []
                while p.pending():
                    frames += p.flush()
                log("ecr", "%d truncated frame(s) dropped (line quiet %d ms)"
                    % (p.stats["truncated"] - t0, _GAP_MS), level="WARN")
            else:
                try:
                    n = await asyncio.wait_for_ms(r.readinto(chunk), left)
                except asyncio.TimeoutError:
                    continue
        else:
            n = await r.readinto(chunk)
        if frames is None:
            if not n:
                if stop_on_eof:
                    while p.pending():
                        for payload in p.flush():
                            await _answer_to(w, payload, handler, log, stats)
                    return p.stats
                # No data (a tty with VMIN=0 whose far end is closed): look again later.
                await asyncio.sleep_ms(_IDLE_MS)
                continue
            last = time.ticks_ms()
            before = p.stats["bad_crc"] + p.stats["bad_frame"] + p.stats["oversized"]
            try:
                frames = p.feed(memoryview(chunk)[:n])
            except MemoryError:
                # Nothing in these bytes was accepted yet: drop them, the ECR resends
                # (same seq, same answer). Serving goes on.
                p.n = 0
                stats["memory"] = stats.get("memory", 0) + 1
                log("ecr", "out of memory reading a request: %d B dropped" % n, level="ERROR")
                await asyncio.sleep_ms(_IDLE_MS)
                continue
            bad = p.stats["bad_crc"] + p.stats["bad_frame"] + p.stats["oversized"] - before
            if bad:
                log("ecr", "%d bad frame(s) dropped (totals: crc %d, framing %d, oversized %d)"
                    % (bad, p.stats["bad_crc"], p.stats["bad_frame"], p.stats["oversized"]),
                    level="WARN")
        for payload in frames:
            await _answer_to(w, payload, handler, log, stats)


async def _answer_to(w, payload, handler, log, stats):
    # Never stop serving: a MemoryError building or writing the reply (a heap shared with
    # the sender and the printer under a burst) drops the reply; the ECR resends the same
    # seq and gets the same answer. Even the log line may not fit then.
    try:
        out = await answer(payload, handler, log, stats)
        if out is not None:
            w.write(out)
            await w.drain()
    except Exception as e:
        stats["unanswered"] = stats.get("unanswered", 0) + 1
        try:
            log("ecr", "request of %d B not answered: %r" % (len(payload), e), level="ERROR")
        except MemoryError:
            pass
