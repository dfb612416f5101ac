/*
 * vfu: small test tool for the vfio-user-pci test guest.
 *
 *   vfu mmio RESOURCE OFFSET WIDTH [VALUE]  read (or write) a register of
 *                                           a PCI BAR through sysfs mmap
 *   vfu dio DEVICE MIB SEED                 write MIB MiB of pseudo-random
 *                                           data with O_DIRECT, read it
 *                                           back, compare checksums
 *   vfu dio-loop DEVICE MIB PASSES SEED     PASSES times: write MIB MiB
 *                                           with O_DIRECT, read them back,
 *                                           compare checksums; reports
 *                                           every I/O that took over 1 s
 *                                           (a device outage) as it ends
 *   vfu dio-read DEVICE MIB                 O_DIRECT sequential read; prints
 *                                           MiB/s
 *   vfu dio-rand DEVICE MIB SECONDS         4 KiB random O_DIRECT reads;
 *                                           prints IOPS
 *   vfu dio-write DEVICE MIB                O_DIRECT sequential write of
 *                                           MIB MiB; prints MiB/s
 *   vfu mmio-bench RESOURCE OFFSET COUNT r|w
 *                                           time COUNT 32-bit accesses to
 *                                           a BAR register; prints
 *                                           ns/access (writes end with one
 *                                           read, which waits for posted
 *                                           writes to be done)
 *   vfu lspci SYSFS-DIR...                  describe PCI functions,
 *                                           lspci -v style, from sysfs
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A number in C notation: 0x... is hex, 0... octal, else decimal. */
static unsigned long long num(const char *s)
{
    long long v = 0;

    sscanf(s, "%lli", &v);
    return v;
}

/* Map the page of a sysfs PCI resource file that holds @off. */
static uint8_t *map_resource(const char *path, unsigned long off)
{
    long pg = 4096; /* x86 */
    uint8_t *p;
    int fd;

    fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) {
        perror(path);
        return NULL;
    }
    p = mmap(NULL, (off & ~(pg - 1)) + pg, PROT_READ | PROT_WRITE,
             MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        perror("mmap");
        return NULL;
    }
    return p + off;
}

static uint64_t reg_read(uint8_t *p, int width)
{
    /* volatile: each access reaches the device once, at this width */
    switch (width) {
    case 1:
        return *(volatile uint8_t *)p; /* see above */
    case 2:
        return *(volatile uint16_t *)p; /* see above */
    case 4:
        return *(volatile uint32_t *)p; /* see above */
    default:
        return *(volatile uint64_t *)p; /* see above */
    }
}

static void reg_write(uint8_t *p, int width, uint64_t v)
{
    /* volatile: each access reaches the device once, at this width */
    switch (width) {
    case 1:
        *(volatile uint8_t *)p = v; /* see above */
        break;
    case 2:
        *(volatile uint16_t *)p = v; /* see above */
        break;
    case 4:
        *(volatile uint32_t *)p = v; /* see above */
        break;
    default:
        *(volatile uint64_t *)p = v; /* see above */
        break;
    }
}

static int mmio(int argc, char **argv)
{
    uint8_t *p;
    int width;

    if (argc < 5) {
        return 2;
    }
    width = atoi(argv[4]);
    p = map_resource(argv[2], num(argv[3]));
    if (!p) {
        return 1;
    }
    if (argc > 5) {
        reg_write(p, width, num(argv[5]));
        return 0;
    }
    printf("0x%llx\n", (unsigned long long)reg_read(p, width));
    return 0;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h)
{
    while (n--) {
        h = (h ^ *p++) * 0x100000001b3ULL;
    }
    return h;
}

#define CHUNK (1024 * 1024)

/*
 * Open @path for O_DIRECT I/O and allocate a @size-byte buffer aligned
 * for it.  Returns the fd, or -1 after printing why.
 */
static int open_direct(const char *path, int flags, size_t size,
                       uint8_t **buf)
{
    int fd = open(path, flags | O_DIRECT);

    if (fd < 0 || posix_memalign((void **)buf, 4096, size)) {
        perror(path);
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static int dio(int argc, char **argv)
{
    int fd, mib, i;
    uint64_t seed, s, wsum = 0xcbf29ce484222325ULL, rsum = wsum;
    uint8_t *buf;
    double t0, t1, t2;

    if (argc < 5) {
        return 2;
    }
    mib = atoi(argv[3]);
    seed = num(argv[4]) | 1;
    fd = open_direct(argv[2], O_RDWR, CHUNK, &buf);
    if (fd < 0) {
        return 1;
    }
    s = seed;
    t0 = now();
    for (i = 0; i < mib; i++) {
        for (size_t j = 0; j < CHUNK / 8; j++) {
            ((uint64_t *)buf)[j] = xorshift(&s);
        }
        wsum = fnv(buf, CHUNK, wsum);
        if (pwrite(fd, buf, CHUNK, (off_t)i * CHUNK) != CHUNK) {
            perror("pwrite");
            return 1;
        }
    }
    fdatasync(fd);
    t1 = now();
    for (i = 0; i < mib; i++) {
        if (pread(fd, buf, CHUNK, (off_t)i * CHUNK) != CHUNK) {
            perror("pread");
            return 1;
        }
        rsum = fnv(buf, CHUNK, rsum);
    }
    t2 = now();
    printf("dio: wrote %d MiB in %.2f s (%.1f MiB/s), read in %.2f s "
           "(%.1f MiB/s)\n", mib, t1 - t0, mib / (t1 - t0), t2 - t1,
           mib / (t2 - t1));
    printf("dio: write checksum %016llx read checksum %016llx %s\n",
           (unsigned long long)wsum, (unsigned long long)rsum,
           wsum == rsum ? "MATCH" : "MISMATCH");
    return wsum == rsum ? 0 : 1;
}

/* One O_DIRECT chunk at MiB @i; reports it if it stalled. */
static int dio_chunk(int fd, uint8_t *buf, int i, bool wr, int pass)
{
    double t0 = now(), t;
    ssize_t n;

    n = wr ? pwrite(fd, buf, CHUNK, (off_t)i * CHUNK) :
             pread(fd, buf, CHUNK, (off_t)i * CHUNK);
    if (n != CHUNK) {
        printf("dio-loop: %s of MiB %d failed: %s\n", wr ? "write" : "read",
               i, n < 0 ? strerror(errno) : "short");
        return -1;
    }
    t = now() - t0;
    if (t > 1.0) {
        printf("dio-loop: stalled %.2f s (pass %d, %s of MiB %d)\n", t,
               pass, wr ? "write" : "read", i);
        fflush(stdout);
    }
    return 0;
}

static int dio_loop(int argc, char **argv)
{
    int fd, mib, passes, p, i, bad = 0;
    uint64_t s;
    uint8_t *buf;
    double t0;

    if (argc < 6) {
        return 2;
    }
    mib = atoi(argv[3]);
    passes = atoi(argv[4]);
    s = num(argv[5]) | 1;
    fd = open_direct(argv[2], O_RDWR, CHUNK, &buf);
    if (fd < 0) {
        return 1;
    }
    printf("dio-loop: %d passes of %d MiB\n", passes, mib);
    fflush(stdout);
    for (p = 1; p <= passes; p++) {
        uint64_t wsum = 0xcbf29ce484222325ULL, rsum = wsum;

        for (i = 0; i < mib; i++) {
            for (size_t j = 0; j < CHUNK / 8; j++) {
                ((uint64_t *)buf)[j] = xorshift(&s);
            }
            wsum = fnv(buf, CHUNK, wsum);
            if (dio_chunk(fd, buf, i, true, p) < 0) {
                return 1;
            }
        }
        t0 = now();
        if (fdatasync(fd) < 0) {
            perror("fdatasync");
            return 1;
        }
        if (now() - t0 > 1.0) {
            printf("dio-loop: stalled %.2f s (pass %d, fdatasync)\n",
                   now() - t0, p);
            fflush(stdout);
        }
        for (i = 0; i < mib; i++) {
            if (dio_chunk(fd, buf, i, false, p) < 0) {
                return 1;
            }
            rsum = fnv(buf, CHUNK, rsum);
        }
        bad += wsum != rsum;
        printf("dio-loop: pass %d %s\n", p, wsum == rsum ? "MATCH" :
               "MISMATCH");
        fflush(stdout);
    }
    return bad ? 1 : 0;
}

static int dio_read(int argc, char **argv)
{
    int fd, mib, i;
    uint8_t *buf;
    double t0, t;

    if (argc < 4) {
        return 2;
    }
    mib = atoi(argv[3]);
    fd = open_direct(argv[2], O_RDONLY, CHUNK, &buf);
    if (fd < 0) {
        return 1;
    }
    t0 = now();
    for (i = 0; i < mib; i++) {
        if (pread(fd, buf, CHUNK, (off_t)i * CHUNK) != CHUNK) {
            perror("pread");
            return 1;
        }
    }
    t = now() - t0;
    printf("seq-read: %d MiB in %.2f s: %.1f MiB/s\n", mib, t, mib / t);
    return 0;
}

/* 4 KiB O_DIRECT random reads for @secs seconds; returns how many. */
static long rand_reads(const char *path, long blocks, double secs,
                       uint64_t s)
{
    long n = 0;
    uint8_t *buf;
    double t0;
    int fd = open_direct(path, O_RDONLY, 4096, &buf);

    if (fd < 0) {
        return -1;
    }
    t0 = now();
    while (now() - t0 < secs) {
        off_t off = (off_t)(xorshift(&s) % blocks) * 4096;
        if (pread(fd, buf, 4096, off) != 4096) {
            perror("pread");
            return -1;
        }
        n++;
    }
    close(fd);
    return n;
}

/*
 * dio-rand DEV MIB SECS [QD]: 4 KiB random reads over the first MIB MiB
 * for SECS seconds, by QD processes (queue depth QD, 1 by default).
 */
static int dio_rand(int argc, char **argv)
{
    long n = 0, blocks;
    int qd, i, p[2], bad = 0;
    double t0, secs;

    if (argc < 5) {
        return 2;
    }
    blocks = atol(argv[3]) * 256;
    secs = atof(argv[4]);
    qd = argc > 5 ? atoi(argv[5]) : 1;
    if (qd < 1 || pipe(p) < 0) {
        return 2;
    }
    t0 = now();
    for (i = 0; i < qd; i++) {
        if (fork() == 0) {
            long r = rand_reads(argv[2], blocks, secs,
                                88172645463325252ULL + i * 7919);

            if (write(p[1], &r, sizeof(r)) != sizeof(r)) {
                _exit(1);
            }
            _exit(0);
        }
    }
    close(p[1]);
    for (i = 0; i < qd; i++) {
        long r;

        if (read(p[0], &r, sizeof(r)) != sizeof(r) || r < 0) {
            bad = 1;
            continue;
        }
        n += r;
    }
    while (wait(NULL) > 0) {
        /* reap the readers */
    }
    if (bad) {
        return 1;
    }
    printf("rand-read-4k: %ld reads at queue depth %d in %.2f s: %.0f IOPS\n",
           n, qd, now() - t0, n / (now() - t0));
    return 0;
}

static int dio_write(int argc, char **argv)
{
    int fd, mib, i;
    uint8_t *buf;
    double t0, t;

    if (argc < 4) {
        return 2;
    }
    mib = atoi(argv[3]);
    fd = open_direct(argv[2], O_WRONLY, CHUNK, &buf);
    if (fd < 0) {
        return 1;
    }
    for (i = 0; i < CHUNK; i++) {
        buf[i] = i * 7 + 1;
    }
    t0 = now();
    for (i = 0; i < mib; i++) {
        if (pwrite(fd, buf, CHUNK, (off_t)i * CHUNK) != CHUNK) {
            perror("pwrite");
            return 1;
        }
    }
    fdatasync(fd);
    t = now() - t0;
    printf("seq-write: %d MiB in %.2f s: %.1f MiB/s\n", mib, t, mib / t);
    return 0;
}

/*
 * Time COUNT 32-bit reads or writes of one register, after COUNT / 10
 * untimed ones.  The write loop ends with a read of the same register:
 * a read is ordered after the writes before it, so posted writes are
 * counted until the device has executed them.
 */
static int mmio_bench(int argc, char **argv)
{
    unsigned long off;
    uint8_t *reg;
    long count, i, warm;
    uint32_t sink = 0;
    int wr;
    double t0, t;

    if (argc < 6) {
        return 2;
    }
    off = num(argv[3]);
    count = atol(argv[4]);
    wr = argv[5][0] == 'w';
    if (count < 1 || (off & 3)) {
        return 2;
    }
    reg = map_resource(argv[2], off);
    if (!reg) {
        return 1;
    }
    warm = count / 10 + 1;
    for (i = 0; i < warm; i++) {
        if (wr) {
            reg_write(reg, 4, i);
        } else {
            sink += reg_read(reg, 4);
        }
    }
    sink += reg_read(reg, 4);
    t0 = now();
    if (wr) {
        for (i = 0; i < count; i++) {
            reg_write(reg, 4, i);
        }
        sink += reg_read(reg, 4);
    } else {
        for (i = 0; i < count; i++) {
            sink += reg_read(reg, 4);
        }
    }
    t = now() - t0;
    printf("mmio-bench: %s %ld x 4 bytes at 0x%lx: %.3f s, %.0f ns/access, "
           "%.0f accesses/s (sink %x)\n", wr ? "write" : "read", count, off,
           t, t * 1e9 / count, count / t, sink);
    return 0;
}

/* Read a sysfs attribute into @buf; "" if it cannot be read. */
static const char *sysfs_str(const char *dir, const char *name, char *buf,
                             size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    buf[0] = 0;
    f = fopen(path, "r");
    if (f) {
        if (!fgets(buf, len, f)) {
            buf[0] = 0;
        }
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = 0;
    return buf;
}

static const char *cap_name(int id)
{
    switch (id) {
    case 0x01: return "Power Management";
    case 0x05: return "MSI";
    case 0x09: return "Vendor Specific";
    case 0x10: return "Express";
    case 0x11: return "MSI-X";
    case 0x12: return "SATA";
    case 0x13: return "PCI Advanced Features";
    default: return "?";
    }
}

static const struct {
    unsigned cls, shift;
    const char *name;
} class_names[] = {
    { 0x0108, 8, "Non-Volatile memory controller" },
    { 0x0106, 8, "SATA controller" },
    { 0x0200, 8, "Ethernet controller" },
    { 0x0600, 8, "Host bridge" },
    { 0x0601, 8, "ISA bridge" },
    { 0x0c05, 8, "SMBus" },
    { 0x00ff, 8, "Unclassified device" },
    { 0x01, 16, "Mass storage controller" },
    { 0x02, 16, "Network controller" },
    { 0x03, 16, "Display controller" },
    { 0x06, 16, "Bridge" },
    { 0x08, 16, "System peripheral" },
    { 0x0c, 16, "Serial bus controller" },
};

static const char *class_name(unsigned cls)
{
    size_t i;

    for (i = 0; i < sizeof(class_names) / sizeof(class_names[0]); i++) {
        if (cls >> class_names[i].shift == class_names[i].cls) {
            return class_names[i].name;
        }
    }
    return "Device";
}

static int lspci_one(const char *dir)
{
    char path[512], drv[512], b1[64], b2[64], b3[64], b4[64], b5[64];
    uint8_t cfg[256] = { 0 };
    unsigned long long start, end, flags;
    unsigned cls;
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    FILE *f;
    int fd, n, i, pos, guard;
    ssize_t len;

    cls = num(sysfs_str(dir, "class", b1, sizeof(b1)));
    printf("%s %s [%04x]: %s:%s (rev %s)\n", name, class_name(cls),
           cls >> 8, sysfs_str(dir, "vendor", b2, sizeof(b2)) + 2,
           sysfs_str(dir, "device", b3, sizeof(b3)) + 2,
           sysfs_str(dir, "revision", b4, sizeof(b4)) + 2);
    printf("\tSubsystem: %s:%s\n",
           sysfs_str(dir, "subsystem_vendor", b1, sizeof(b1)) + 2,
           sysfs_str(dir, "subsystem_device", b2, sizeof(b2)) + 2);
    snprintf(path, sizeof(path), "%s/config", dir);
    fd = open(path, O_RDONLY);
    len = fd < 0 ? -1 : pread(fd, cfg, sizeof(cfg), 0);
    if (fd >= 0) {
        close(fd);
    }
    printf("\tControl: I/O%c Mem%c BusMaster%c, IRQ %s, interrupt pin %c\n",
           cfg[4] & 1 ? '+' : '-', cfg[4] & 2 ? '+' : '-',
           cfg[4] & 4 ? '+' : '-', sysfs_str(dir, "irq", b5, sizeof(b5)),
           cfg[0x3d] ? 'A' + cfg[0x3d] - 1 : '-');
    snprintf(path, sizeof(path), "%s/resource", dir);
    f = fopen(path, "r");
    for (i = 0; f && i < 7 &&
         fscanf(f, "%llx %llx %llx", &start, &end, &flags) == 3; i++) {
        if (!end) {
            continue;
        }
        if (i == 6) {
            printf("\tExpansion ROM at %llx [size=%lluK]\n", start,
                   (end - start + 1) >> 10);
        } else if (flags & 0x100) {
            printf("\tRegion %d: I/O ports at %llx [size=%llu]\n", i, start,
                   end - start + 1);
        } else {
            printf("\tRegion %d: Memory at %llx (%s, %sprefetchable) "
                   "[size=%lluK]\n", i, start,
                   flags & 0x100000 ? "64-bit" : "32-bit",
                   flags & 0x2000 ? "" : "non-", (end - start + 1) >> 10);
        }
    }
    if (f) {
        fclose(f);
    }
    if (len >= 64 && (cfg[6] & 0x10)) {
        pos = cfg[0x34] & ~3;
        for (guard = 0; pos >= 0x40 && pos < len - 1 && guard < 48; guard++) {
            printf("\tCapabilities: [%02x] %s", pos, cap_name(cfg[pos]));
            if (cfg[pos] == 0x05) {
                uint16_t ctl = cfg[pos + 2] | cfg[pos + 3] << 8;
                printf(": Enable%c Count=%d/%d 64bit%c", ctl & 1 ? '+' : '-',
                       1 << ((ctl >> 4) & 7), 1 << ((ctl >> 1) & 7),
                       ctl & 0x80 ? '+' : '-');
            } else if (cfg[pos] == 0x11) {
                uint16_t ctl = cfg[pos + 2] | cfg[pos + 3] << 8;
                uint32_t tbl = cfg[pos + 4] | cfg[pos + 5] << 8 |
                               cfg[pos + 6] << 16 |
                               (uint32_t)cfg[pos + 7] << 24;
                printf(": Enable%c Count=%d Masked%c, table in BAR%u at "
                       "0x%x", ctl & 0x8000 ? '+' : '-', (ctl & 0x7ff) + 1,
                       ctl & 0x4000 ? '+' : '-', tbl & 7, tbl & ~7u);
            }
            printf("\n");
            pos = cfg[pos + 1] & ~3;
        }
    }
    snprintf(path, sizeof(path), "%s/driver", dir);
    n = readlink(path, drv, sizeof(drv) - 1);
    if (n > 0) {
        drv[n] = 0;
        printf("\tKernel driver in use: %s\n", strrchr(drv, '/') + 1);
    }
    return 0;
}

static int lspci(int argc, char **argv)
{
    int i;

    for (i = 2; i < argc; i++) {
        lspci_one(argv[i]);
    }
    return argc > 2 ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "mmio")) {
        return mmio(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio")) {
        return dio(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio-loop")) {
        return dio_loop(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio-read")) {
        return dio_read(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio-rand")) {
        return dio_rand(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio-write")) {
        return dio_write(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "mmio-bench")) {
        return mmio_bench(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "lspci")) {
        return lspci(argc, argv);
    }
    fprintf(stderr, "usage: vfu mmio|mmio-bench|dio|dio-loop|dio-read|"
            "dio-write|dio-rand|lspci ...\n");
    return 2;
}
