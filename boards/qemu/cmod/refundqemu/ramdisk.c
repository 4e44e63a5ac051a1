// The qemu test board's flash: a littlefs block device in static RAM (outside the
// MicroPython heap), with the virtual board's FlashDev behaviour (boards/unix/flashdev.py):
// counters, and a power cut at the k-th program-or-erase (counted together, 1-based),
// optionally tearing that block, after which every call returns -5 (EIO) and nothing is
// allocated. The contents survive a soft reset (a new interpreter on the same "chip");
// snapshot()/restore() copy the whole device to and from a second buffer, so a test can
// start many sessions from one formatted image.
//
//   import ramdisk
//   d = ramdisk.RAMDisk(block_size=4096, blocks=256)  # same chip each time it is made
//   d.blank(); d.snapshot(); d.restore(); d.arm(cut_at, torn); d.ops(); d.stats()
//   ramdisk.stash(slot, data); exec(ramdisk.stash(slot))   # a script kept across resets
//
// Also provides mp_hal_time_ns() (littlefs file mtimes): the port has no RTC, so it
// counts from 2026-01-01 with the port's tick counter.
#include <string.h>
#include "py/runtime.h"
#include "py/mphal.h"

#define RD_MAX_BYTES (256 * 4096)
#define RD_EIO (-5)

static uint8_t rd_mem[RD_MAX_BYTES];
static uint8_t rd_snap[RD_MAX_BYTES];
static int rd_formatted_once = 0;

uint64_t mp_hal_time_ns(void) {
    // 2026-01-01T00:00:00Z in ns since 1970, plus the uptime.
    return 1767225600ULL * 1000000000ULL + (uint64_t)mp_hal_ticks_ms() * 1000000ULL;
}

typedef struct _ramdisk_obj_t {
    mp_obj_base_t base;
    uint32_t bs, n;
    uint32_t cut_at;
    bool torn, dead;
    uint32_t reads, progs, erases, rbytes, pbytes;
} ramdisk_obj_t;

static mp_obj_t ramdisk_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *all_args) {
    enum { ARG_block_size, ARG_blocks };
    static const mp_arg_t allowed[] = {
        { MP_QSTR_block_size, MP_ARG_INT, {.u_int = 4096} },
        { MP_QSTR_blocks, MP_ARG_INT, {.u_int = 256} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed)];
    mp_arg_parse_all_kw_array(n_args, n_kw, all_args, MP_ARRAY_SIZE(allowed), allowed, args);
    mp_int_t bs = args[ARG_block_size].u_int, n = args[ARG_blocks].u_int;
    if (bs < 128 || n < 2 || bs * n > RD_MAX_BYTES) {
        mp_raise_ValueError(MP_ERROR_TEXT("ramdisk geometry"));
    }
    if (!rd_formatted_once) {  // power-on: erased NOR flash
        memset(rd_mem, 0xff, sizeof(rd_mem));
        rd_formatted_once = 1;
    }
    ramdisk_obj_t *self = mp_obj_malloc(ramdisk_obj_t, type);
    self->bs = bs;
    self->n = n;
    self->cut_at = 0;
    self->torn = self->dead = false;
    self->reads = self->progs = self->erases = self->rbytes = self->pbytes = 0;
    return MP_OBJ_FROM_PTR(self);
}

static bool rd_cut_now(ramdisk_obj_t *self) {
    return self->cut_at && self->progs + self->erases == self->cut_at;
}

static bool rd_range(ramdisk_obj_t *self, mp_int_t block, mp_int_t off, size_t len) {
    return block >= 0 && (uint32_t)block < self->n && off >= 0
           && (size_t)block * self->bs + off + len <= (size_t)self->n * self->bs;
}

static mp_obj_t ramdisk_readblocks(size_t n_args, const mp_obj_t *args) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    if (self->dead) {
        return MP_OBJ_NEW_SMALL_INT(RD_EIO);
    }
    mp_int_t block = mp_obj_get_int(args[1]);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_WRITE);
    mp_int_t off = n_args > 3 ? mp_obj_get_int(args[3]) : 0;
    if (!rd_range(self, block, off, buf.len)) {
        return MP_OBJ_NEW_SMALL_INT(RD_EIO);
    }
    self->reads++;
    self->rbytes += buf.len;
    memcpy(buf.buf, rd_mem + block * self->bs + off, buf.len);
    return MP_OBJ_NEW_SMALL_INT(0);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ramdisk_readblocks_obj, 3, 4, ramdisk_readblocks);

static mp_int_t rd_erase(ramdisk_obj_t *self, mp_int_t block) {
    if (self->dead) {
        return RD_EIO;
    }
    if (block < 0 || (uint32_t)block >= self->n) {
        return RD_EIO;
    }
    self->erases++;
    uint8_t *p = rd_mem + block * self->bs;
    if (rd_cut_now(self)) {
        self->dead = true;
        if (self->torn) {
            memset(p, 0xff, self->bs / 2);  // power dropped half way through the erase
        }
        return RD_EIO;
    }
    memset(p, 0xff, self->bs);
    return 0;
}

static mp_obj_t ramdisk_writeblocks(size_t n_args, const mp_obj_t *args) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(args[0]);
    if (self->dead) {
        return MP_OBJ_NEW_SMALL_INT(RD_EIO);
    }
    mp_int_t block = mp_obj_get_int(args[1]);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[2], &buf, MP_BUFFER_READ);
    mp_int_t off = 0;
    if (n_args < 4 || args[3] == mp_const_none) {
        // Block-erase-and-write interface (FAT): the erase counts as its own op.
        mp_int_t r = rd_erase(self, block);
        if (r) {
            return MP_OBJ_NEW_SMALL_INT(r);
        }
    } else {
        off = mp_obj_get_int(args[3]);
    }
    if (!rd_range(self, block, off, buf.len)) {
        return MP_OBJ_NEW_SMALL_INT(RD_EIO);
    }
    self->progs++;
    uint8_t *p = rd_mem + block * self->bs + off;
    if (rd_cut_now(self)) {
        self->dead = true;
        if (self->torn) {
            memcpy(p, buf.buf, buf.len / 2);  // half the page programmed
        }
        return MP_OBJ_NEW_SMALL_INT(RD_EIO);
    }
    self->pbytes += buf.len;
    // NOR semantics like the image file: the bytes are replaced (littlefs erases first).
    memcpy(p, buf.buf, buf.len);
    return MP_OBJ_NEW_SMALL_INT(0);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ramdisk_writeblocks_obj, 3, 4, ramdisk_writeblocks);

static mp_obj_t ramdisk_ioctl(mp_obj_t self_in, mp_obj_t op_in, mp_obj_t arg_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    switch (mp_obj_get_int(op_in)) {
        case 4: // MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return MP_OBJ_NEW_SMALL_INT(self->n);
        case 5: // MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return MP_OBJ_NEW_SMALL_INT(self->bs);
        case 6: // MP_BLOCKDEV_IOCTL_BLOCK_ERASE
            return MP_OBJ_NEW_SMALL_INT(rd_erase(self, mp_obj_get_int(arg_in)));
        default: // init, deinit, sync
            return MP_OBJ_NEW_SMALL_INT(0);
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(ramdisk_ioctl_obj, ramdisk_ioctl);

static mp_obj_t ramdisk_arm(mp_obj_t self_in, mp_obj_t cut_in, mp_obj_t torn_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    self->cut_at = mp_obj_get_int(cut_in);
    self->torn = mp_obj_is_true(torn_in);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(ramdisk_arm_obj, ramdisk_arm);

static mp_obj_t ramdisk_ops(mp_obj_t self_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return mp_obj_new_int(self->progs + self->erases);
}
static MP_DEFINE_CONST_FUN_OBJ_1(ramdisk_ops_obj, ramdisk_ops);

static mp_obj_t ramdisk_is_dead(mp_obj_t self_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return mp_obj_new_bool(self->dead);
}
static MP_DEFINE_CONST_FUN_OBJ_1(ramdisk_is_dead_obj, ramdisk_is_dead);

static mp_obj_t ramdisk_stats(mp_obj_t self_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_obj_t d = mp_obj_new_dict(6);
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_reads), mp_obj_new_int(self->reads));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_programs), mp_obj_new_int(self->progs));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_erases), mp_obj_new_int(self->erases));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_bytes_read), mp_obj_new_int(self->rbytes));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_bytes_programmed), mp_obj_new_int(self->pbytes));
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(MP_QSTR_dead), mp_obj_new_bool(self->dead));
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ramdisk_stats_obj, ramdisk_stats);

static mp_obj_t ramdisk_blank(mp_obj_t self_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    memset(rd_mem, 0xff, (size_t)self->n * self->bs);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ramdisk_blank_obj, ramdisk_blank);

static mp_obj_t ramdisk_snapshot(mp_obj_t self_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    memcpy(rd_snap, rd_mem, (size_t)self->n * self->bs);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ramdisk_snapshot_obj, ramdisk_snapshot);

static mp_obj_t ramdisk_restore(mp_obj_t self_in) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    memcpy(rd_mem, rd_snap, (size_t)self->n * self->bs);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(ramdisk_restore_obj, ramdisk_restore);

static const mp_rom_map_elem_t ramdisk_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&ramdisk_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&ramdisk_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&ramdisk_ioctl_obj) },
    { MP_ROM_QSTR(MP_QSTR_arm), MP_ROM_PTR(&ramdisk_arm_obj) },
    { MP_ROM_QSTR(MP_QSTR_ops), MP_ROM_PTR(&ramdisk_ops_obj) },
    { MP_ROM_QSTR(MP_QSTR_is_dead), MP_ROM_PTR(&ramdisk_is_dead_obj) },
    { MP_ROM_QSTR(MP_QSTR_stats), MP_ROM_PTR(&ramdisk_stats_obj) },
    { MP_ROM_QSTR(MP_QSTR_blank), MP_ROM_PTR(&ramdisk_blank_obj) },
    { MP_ROM_QSTR(MP_QSTR_snapshot), MP_ROM_PTR(&ramdisk_snapshot_obj) },
    { MP_ROM_QSTR(MP_QSTR_restore), MP_ROM_PTR(&ramdisk_restore_obj) },
};
static MP_DEFINE_CONST_DICT(ramdisk_locals, ramdisk_locals_table);

static void ramdisk_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    ramdisk_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (dest[0] == MP_OBJ_NULL) {
        if (attr == MP_QSTR_bs) {
            dest[0] = MP_OBJ_NEW_SMALL_INT(self->bs);
            return;
        } else if (attr == MP_QSTR_n) {
            dest[0] = MP_OBJ_NEW_SMALL_INT(self->n);
            return;
        } else if (attr == MP_QSTR_dead) {
            dest[0] = mp_obj_new_bool(self->dead);
            return;
        }
        dest[1] = MP_OBJ_SENTINEL;  // look in locals_dict
    }
}

MP_DEFINE_CONST_OBJ_TYPE(
    ramdisk_type, MP_QSTR_RAMDisk, MP_TYPE_FLAG_NONE,
    make_new, ramdisk_make_new,
    attr, ramdisk_attr,
    locals_dict, &ramdisk_locals
    );

// stash(slot, data) keeps up to 16 KiB in static RAM across soft resets; stash(slot)
// returns it as bytes. The test harness sends a script once (the emulated UART moves
// ~10 KB/s) and runs it after every soft reset with exec(ramdisk.stash(slot)).
#define RD_STASH_SLOTS (4)
#define RD_STASH_MAX (16384)
static uint8_t rd_stash[RD_STASH_SLOTS][RD_STASH_MAX];
static size_t rd_stash_len[RD_STASH_SLOTS];

static mp_obj_t ramdisk_stash(size_t n_args, const mp_obj_t *args) {
    mp_int_t slot = mp_obj_get_int(args[0]);
    if (slot < 0 || slot >= RD_STASH_SLOTS) {
        mp_raise_ValueError(MP_ERROR_TEXT("stash slot"));
    }
    if (n_args == 1) {
        return mp_obj_new_bytes(rd_stash[slot], rd_stash_len[slot]);
    }
    mp_buffer_info_t buf;
    mp_get_buffer_raise(args[1], &buf, MP_BUFFER_READ);
    if (buf.len > RD_STASH_MAX) {
        mp_raise_ValueError(MP_ERROR_TEXT("stash too big"));
    }
    memcpy(rd_stash[slot], buf.buf, buf.len);
    rd_stash_len[slot] = buf.len;
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(ramdisk_stash_obj, 1, 2, ramdisk_stash);

static const mp_rom_map_elem_t ramdisk_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_ramdisk) },
    { MP_ROM_QSTR(MP_QSTR_RAMDisk), MP_ROM_PTR(&ramdisk_type) },
    { MP_ROM_QSTR(MP_QSTR_stash), MP_ROM_PTR(&ramdisk_stash_obj) },
};
static MP_DEFINE_CONST_DICT(ramdisk_module_globals, ramdisk_module_globals_table);

const mp_obj_module_t ramdisk_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&ramdisk_module_globals,
};
MP_REGISTER_MODULE(MP_QSTR_ramdisk, ramdisk_module);
