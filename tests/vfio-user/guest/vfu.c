/*
 * vfu: small test tool for the vfio-user-pci test guest.
 *
 *   vfu mmio RESOURCE OFFSET WIDTH [VALUE]  read (or write) a register of
 *                                           a PCI BAR through sysfs mmap
 *   vfu dio DEVICE MIB SEED                 write MIB MiB of pseudo-random
 *                                           data with O_DIRECT, read it
 *                                           back, compare checksums
 *   vfu dio-read DEVICE MIB                 O_DIRECT sequential read; prints
 *                                           MiB/s
 *   vfu dio-rand DEVICE MIB SECONDS         4 KiB random O_DIRECT reads;
 *                                           prints IOPS
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int mmio(int argc, char **argv)
{
    int fd, width;
    unsigned long off;
    long pg = sysconf(_SC_PAGESIZE);
    volatile uint8_t *p;
    uint64_t v = 0;

    if (argc < 5) {
        return 2;
    }
    off = strtoul(argv[3], NULL, 0);
    width = atoi(argv[4]);
    fd = open(argv[2], O_RDWR | O_SYNC);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    p = mmap(NULL, (off & ~(pg - 1)) + pg, PROT_READ | PROT_WRITE,
             MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    p += off;
    if (argc > 5) {
        v = strtoull(argv[5], NULL, 0);
        switch (width) {
        case 1: *(volatile uint8_t *)p = v; break;
        case 2: *(volatile uint16_t *)p = v; break;
        case 4: *(volatile uint32_t *)p = v; break;
        default: *(volatile uint64_t *)p = v; break;
        }
        return 0;
    }
    switch (width) {
    case 1: v = *(volatile uint8_t *)p; break;
    case 2: v = *(volatile uint16_t *)p; break;
    case 4: v = *(volatile uint32_t *)p; break;
    default: v = *(volatile uint64_t *)p; break;
    }
    printf("0x%llx\n", (unsigned long long)v);
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
    seed = strtoull(argv[4], NULL, 0) | 1;
    fd = open(argv[2], O_RDWR | O_DIRECT);
    if (fd < 0 || posix_memalign((void **)&buf, 4096, CHUNK)) {
        perror(argv[2]);
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

static int dio_read(int argc, char **argv)
{
    int fd, mib, i;
    uint8_t *buf;
    double t0, t;

    if (argc < 4) {
        return 2;
    }
    mib = atoi(argv[3]);
    fd = open(argv[2], O_RDONLY | O_DIRECT);
    if (fd < 0 || posix_memalign((void **)&buf, 4096, CHUNK)) {
        perror(argv[2]);
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

static int dio_rand(int argc, char **argv)
{
    int fd;
    long n = 0, blocks;
    uint8_t *buf;
    double t0, secs;
    uint64_t s = 88172645463325252ULL;

    if (argc < 5) {
        return 2;
    }
    blocks = atol(argv[3]) * 256;
    secs = atof(argv[4]);
    fd = open(argv[2], O_RDONLY | O_DIRECT);
    if (fd < 0 || posix_memalign((void **)&buf, 4096, 4096)) {
        perror(argv[2]);
        return 1;
    }
    t0 = now();
    while (now() - t0 < secs) {
        off_t off = (off_t)(xorshift(&s) % blocks) * 4096;
        if (pread(fd, buf, 4096, off) != 4096) {
            perror("pread");
            return 1;
        }
        n++;
    }
    printf("rand-read-4k: %ld reads in %.2f s: %.0f IOPS\n", n, now() - t0,
           n / (now() - t0));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "mmio")) {
        return mmio(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio")) {
        return dio(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio-read")) {
        return dio_read(argc, argv);
    } else if (argc > 1 && !strcmp(argv[1], "dio-rand")) {
        return dio_rand(argc, argv);
    }
    fprintf(stderr, "usage: vfu mmio|dio|dio-read|dio-rand ...\n");
    return 2;
}
