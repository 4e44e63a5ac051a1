"""The virtual board as a technician and the other tools meet it: bench, ttys, REPL, mpremote."""
import os
import subprocess
import sys
import time

import serial

BENCH = os.path.join(os.path.dirname(sys.executable), "refund-bench")


def test_boot_reports_what_it_mounted_and_started(board_factory, tmp_path):
    b = board_factory()
    st = b.ready()
    assert st["board"] == "unix" and st["reset"] == "power_on"
    assert st["flash"]["fs"] == "littlefs2" and st["flash"]["formatted"] is True
    assert st["flash"]["blocks"] == 256 and st["flash"]["block_size"] == 4096
    assert st["uarts"] == {"printer": True, "ecr": True}
    assert set(st["tasks"]) >= {"console", "wdt"}
    assert b"blank image: formatting" in b.out
    assert os.path.getsize(b.flash) == 1024 * 1024
    b.kill()
    # A second boot keeps the file system: no format.
    b2 = board_factory()
    st2 = b2.ready()
    assert st2["flash"]["formatted"] is False
    assert b"formatting" not in b2.out


def test_corrupt_image_is_reformatted_loudly(board_factory, tmp_path):
    img = tmp_path / "flash.img"
    img.write_bytes(os.urandom(1024 * 1024))
    b = board_factory(img)
    st = b.ready()
    assert st["flash"]["formatted"] is True
    assert b"ERROR flash: CANNOT MOUNT" in b.out and b"REFORMATTING" in b.out


def test_uart_ttys_carry_bytes_both_ways(board_factory):
    import threading

    b = board_factory()
    b.ready()
    # The firmware's UARTs are raw ttys: drive one from the REPL, as a technician would.
    code = ("import board, time\nu = board.uart('ecr')\nu.write(b'\\x1b@hello')\n"
            "got = b''\nt = time.ticks_ms()\n"
            "while len(got) < 8 and time.ticks_diff(time.ticks_ms(), t) < 5000:\n"
            " got += u.read(64) or b''\n time.sleep_ms(10)\n"
            "print(got)\n")
    with serial.serial_for_url(b.ends["ecr"], timeout=5) as far:  # opened first: pyserial flushes on open
        res = {}
        th = threading.Thread(target=lambda: res.setdefault("r", b.mpremote("exec", code)))
        th.start()
        assert far.read(7) == b"\x1b@hello"
        far.write(b"\x02ping\r\n\x00\xff")
        th.join(30)
    r = res["r"]
    assert r.returncode == 0, r.stderr
    # Bytes are carried untranslated (no CR/LF mangling, 0x00/0xff intact).
    assert "b'\\x02ping\\r\\n\\x00\\xff'" in r.stdout, r.stdout


def test_sigkill_is_a_power_cut_and_kills_the_interpreter(board_factory):
    b = board_factory()
    b.ready()
    pid = b.proc.pid
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        assert b"micropython" in f.read()  # the bench exec'd the interpreter: same PID
    b.kill()
    assert b.proc.returncode == -9
    time.sleep(0.3)
    left = subprocess.run(["pgrep", "-f", b.flash], capture_output=True, text=True).stdout
    assert left.strip() == ""  # neither the interpreter nor the null-modem bridge survives


def test_missing_tty_names_role_and_path(tmp_path):
    r = subprocess.run([BENCH, "board", "--flash", str(tmp_path / "f.img"), "--printer", "/dev/nonexistent-tty9"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "printer" in r.stderr and "/dev/nonexistent-tty9" in r.stderr


def test_unknown_board_lists_boards(tmp_path):
    r = subprocess.run([BENCH, "board", "--board", "esp8266", "--flash", str(tmp_path / "f.img")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "unix, esp32, rp2040" in r.stderr
    r = subprocess.run(["make", "-s", "mpy", "BOARD=esp8266"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unix, esp32, rp2040" in r.stderr


def test_ctrl_c_stops_the_app_and_leaves_the_repl(board_factory):
    b = board_factory()
    b.ready()
    b.console.write(b"\x03")
    b.read_until(b"stopped by Ctrl-C")
    b.read_until(b">>> ")
    b.console.write(b"print(6*7)\r")
    b.read_until(b"42")


def test_mpremote_fs_ls_and_cp_while_app_runs(board_factory, tmp_path):
    b = board_factory()
    b.ready()
    src = tmp_path / "note.txt"
    src.write_bytes(b"refund bench\n" * 100)
    r = b.mpremote("fs", "cp", str(src), ":/flash/note.txt")
    assert r.returncode == 0, r.stdout + r.stderr
    r = b.mpremote("fs", "ls", ":/flash")
    assert r.returncode == 0, r.stderr
    assert "1300 note.txt" in r.stdout
    back = tmp_path / "back.txt"
    r = b.mpremote("fs", "cp", ":/flash/note.txt", str(back))
    assert r.returncode == 0 and back.read_bytes() == src.read_bytes()


def test_watchdog_resets_a_stuck_board(board_factory):
    b = board_factory()
    b.ready()
    # Stop the app (and with it the feeding task), then block: the WDT must fire.
    r = b.mpremote("exec", "import board\nw = board.wdt(300)\nimport time\ntime.sleep(3)\n", timeout=20)
    assert b.proc.wait(10) == -9
    b2 = board_factory(b.flash)
    assert b2.ready()["reset"] == "watchdog"
