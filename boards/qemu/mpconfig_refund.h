// The qemu test board's configuration: the port's own mpconfigport.h (unchanged), with
// asyncio's C core turned on (the port ships it off). Selected by host_tools/mpbuild.py
// through CFLAGS_EXTRA=-DMP_CONFIGFILE="<this file>"; littlefs2 comes from
// MICROPY_VFS_LFS2=1 and the heap from MICROPY_HEAP_SIZE=98304 on the make line.
#include <mpconfigport.h>

#undef MICROPY_PY_ASYNCIO
#define MICROPY_PY_ASYNCIO (1)

// os.urandom (the outbox's rid prefix, intake's salt) on the port's mp_hal_get_random;
// a board has a hardware RNG there (ESP32, RP2040), the emulator an LCG.
#define MICROPY_PY_OS_URANDOM (1)
