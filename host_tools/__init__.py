"""Host-side tools for the refund terminal: bench, simulators, technician tools."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARDS = ("unix", "esp32", "rp2040")
