# The qemu test board's C additions (USER_C_MODULES=boards/qemu/cmod):
# mp_hal_time_ns for littlefs file times, and the `ramdisk` RAM block device.
REFUNDQEMU_DIR := $(USERMOD_DIR)
SRC_USERMOD_C += $(REFUNDQEMU_DIR)/ramdisk.c
