"""The control socket of the printer emulator (host_tools/printer_emu.py): a unix stream
socket, one JSON object a line each way, to change faults while it runs.

  {"cmd": "fault", "cover_open": true}   -> {"ok": true, "state": {...}}
  {"cmd": "state"}                         -> {"ok": true, "state": {...}}
  {"cmd": "receipts"}                      -> {"ok": true, "receipts": [...]}
  {"cmd": "inject", "hex": "00ff"}         -> {"ok": true}   (raw bytes to the host)
"""
import json
import os
import socket
import threading


def handle(emu, msg):
    """One control command (a dict) on a PrinterEmulator; returns the reply dict."""
    cmd = msg.get("cmd")
    if cmd == "fault":
        emu.set_fault(**{k: v for k, v in msg.items() if k != "cmd"})
        return {"ok": True, "state": emu.state()}
    if cmd == "state":
        return {"ok": True, "state": emu.state()}
    if cmd == "receipts":
        with emu.lock:
            return {"ok": True, "receipts": list(emu.receipts)}
    if cmd == "inject":
        emu.inject(bytes.fromhex(msg.get("hex", "")))
        return {"ok": True}
    return {"ok": False, "error": "unknown cmd %r (fault, state, receipts, inject)" % (cmd,)}


class ControlServer:
    def __init__(self, emu, path):
        """Listen on path (replacing what is there), serve each connection in a thread."""
        if os.path.exists(path):
            os.unlink(path)
        self.emu = emu
        self.path = path
        self._closed = threading.Event()
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(path)
        self._srv.listen(4)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._closed.set()
        try:
            self._srv.close()
        except OSError:
            pass
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _accept(self):
        while not self._closed.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn):
        with conn, conn.makefile("rwb") as f:
            for raw in f:
                try:
                    reply = handle(self.emu, json.loads(raw))
                except Exception as e:
                    reply = {"ok": False, "error": repr(e)}
                f.write((json.dumps(reply, ensure_ascii=False) + "\n").encode())
                f.flush()


def control_request(path, msg, timeout=5):
    """Send one command to a running refund-printer's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        with s.makefile("rwb") as f:
            f.write((json.dumps(msg) + "\n").encode())
            f.flush()
            return json.loads(f.readline())
