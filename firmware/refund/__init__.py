# Refund terminal firmware (MicroPython). Core modules get every piece of
# hardware from the board HAL object they are handed; none imports machine.
VERSION = "0.1.0"
