# Board entry point (runs after boot on a real board; the virtual board's
# vboot.py imports it). The board module is the HAL for this hardware.
import board
from refund import app

app.main(board)
