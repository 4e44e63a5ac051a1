# Host link transport: one TCP connection to the payment host, reused for many
# messages, several requests outstanding, answers matched by STAN + terminal id
# (never by order). Every inbound frame is validated; a bad one is logged, counted
# and dropped; a framing error resets the connection. Nothing here decides money:
# it hands valid, MAC-verified answers to the waiting request (sender.py decides).
import asyncio
from micropython import const
from refund import hostmsg, iso8583
from refund import mac as _mac

_IPPROTO_TCP = const(6)  # same numbers on Linux and lwIP (ESP32, RP2040 W)
_TCP_NODELAY = const(1)
# errno values meaning the host was never reached (nothing we sent can have arrived)
_UNREACHABLE = (111, 113, 101, 110)  # ECONNREFUSED EHOSTUNREACH ENETUNREACH ETIMEDOUT
CONNECT_MS = const(3000)  # connect timeout unless set (the sender sets host_link.connect_ms)


TIMEOUT = "timeout"  # request() result: no answer in time, connection still up


class _Waiter:
    def __init__(self):
        self.ev = asyncio.Event()
        self.resp = None


class Link:
    def __init__(self, host, port, key, tid, log, connect_ms=CONNECT_MS):
        self.host = host
        self.port = port
        self.key = key  # mac.Mac: never logged (its repr hides it)
        self.tid = tid
        self.log = log
        self.connect_ms = connect_ms
        self._r = None
        self._w = None
        self._rx_task = None
        self._lock = asyncio.Lock()
        self._wait = {}  # STAN -> _Waiter
        self.unreachable = False  # the last connection attempt never reached the host
        self._answered = False  # this connection delivered at least one frame
        self._buf = bytearray(iso8583.MSG_MAX)  # longest legal message; longer frames are skipped
        self.stats = {"sent": 0, "answers": 0, "bad_mac": 0, "bad_frame": 0, "bad_msg": 0,
                      "unsolicited": 0, "resets": 0, "connects": 0}

    def up(self):
        return self._w is not None

    async def _connect(self):
        async with self._lock:
            if self._w is not None:
                return
            r, w = await asyncio.wait_for_ms(asyncio.open_connection(self.host, self.port),
                                             self.connect_ms)
            self._r, self._w = r, w
            _nodelay(w)
            self.unreachable = False
            self._answered = False
            self.stats["connects"] += 1
            self._rx_task = asyncio.create_task(self._rx(r))
            self.log("host", "connected to %s:%d" % (self.host, self.port))

    def close(self, why="", err=None):
        w = self._w
        if w is None:
            return
        if err is not None and not self._answered and _errno(err) in _UNREACHABLE:
            self.unreachable = True
        self._w = self._r = None
        try:
            w.close()
        except OSError:
            pass
        if why:
            self.log("host", "connection closed: " + why, level="WARN")
        # Every outstanding request's outcome is now unknown: wake them with None.
        for k in list(self._wait):
            self._wait[k].ev.set()
        t = self._rx_task
        self._rx_task = None
        if t is not None and t is not asyncio.current_task():
            t.cancel()

    async def connect(self):
        """Connect if not connected; OSError if the host cannot be reached."""
        try:
            await self._connect()
        except asyncio.TimeoutError:
            raise OSError("connect timeout")

    async def request(self, msg, timeout_ms):
        """Send msg (dict without MAC) and wait for its answer. Returns the decoded,
        MAC-verified, spec-valid answer dict; TIMEOUT when no answer came in time; None
        when the connection was lost (both: outcome unknown). Raises OSError when the
        host cannot be reached (nothing was sent)."""
        await self.connect()
        stan = msg["11"]
        w = _Waiter()
        self._wait[stan] = w
        try:
            frame = _mac.signed_frame(self.key, msg)
            writer = self._w
            if writer is None:
                raise OSError("connection lost")
            writer.write(frame)
            await writer.drain()
            self.stats["sent"] += 1
            try:
                await asyncio.wait_for_ms(w.ev.wait(), timeout_ms)
            except asyncio.TimeoutError:
                return TIMEOUT
            if w.resp is None and self.unreachable:
                raise OSError("host unreachable")
            return w.resp
        except OSError as e:
            self.close("send failed: %s" % e, e)
            if self.unreachable:
                raise
            return None
        finally:
            if self._wait.get(stan) is w:
                del self._wait[stan]

    async def _rx(self, r):
        buf = self._buf
        try:
            while True:
                try:
                    n = await iso8583.read_frame_into(r, buf)
                except iso8583.DecodeError as e:
                    if e.reason == "long":
                        self.stats["bad_msg"] += 1
                        self.log("host", "dropped a frame longer than any message (%d B max)" % len(buf),
                                 level="WARN")
                        continue
                    self.stats["bad_frame"] += 1
                    self.close("bad frame length (%s): resetting" % e.reason)
                    return
                self._answered = True
                self._handle(memoryview(buf)[:n])
        except (EOFError, OSError) as e:
            self.close("host closed (%r)" % (e,), e if isinstance(e, OSError) else None)
        except asyncio.CancelledError:
            pass

    def _handle(self, data):
        try:
            msg = iso8583.decode(data)
        except iso8583.DecodeError as e:
            self.stats["bad_msg"] += 1
            self.log("host", "dropped undecodable message: %s field %d" % (e.reason, e.field),
                     level="WARN")
            return
        if not _mac.verify(self.key, data, msg):
            # Treated as never received: it approves, declines or cancels nothing.
            self.stats["bad_mac"] += 1
            self.log("host", "dropped %s STAN %s: MAC does not verify" % (msg.get("t"), msg.get("11")),
                     level="WARN")
            return
        try:
            hostmsg.validate(msg)
        except iso8583.DecodeError as e:
            self.stats["bad_msg"] += 1
            self.log("host", "dropped %s: %s field %d" % (msg.get("t"), e.reason, e.field), level="WARN")
            return
        w = self._wait.get(msg.get("11"))
        if w is None or msg.get("41") != self.tid or w.resp is not None:
            self.stats["unsolicited"] += 1
            self.log("host", "dropped unsolicited %s STAN %s" % (msg.get("t"), msg.get("11")),
                     level="WARN")
            return
        self.stats["answers"] += 1
        w.resp = msg
        w.ev.set()


def _nodelay(w):
    # Several requests are outstanding on one connection: without TCP_NODELAY, Nagle's
    # algorithm holds each small frame until the previous one is acknowledged.
    try:
        w.s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass  # a stack without the option: still correct, only slower


def _errno(e):
    return e.args[0] if e.args and isinstance(e.args[0], int) else 0
