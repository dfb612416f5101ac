/*
 * The number of open file descriptors of a process, for the vfio-user
 * tests that check that nothing leaks one (the unit test, the qtest,
 * the fuzz target).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_VFIO_USER_COUNT_FDS_H
#define TESTS_VFIO_USER_COUNT_FDS_H

/* The descriptors open in process @pid, or in this one when @pid is 0. */
static inline int test_count_fds(pid_t pid)
{
    g_autofree char *path = pid ? g_strdup_printf("/proc/%d/fd", (int)pid)
                                : g_strdup("/proc/self/fd");
    GDir *dir = g_dir_open(path, 0, NULL);
    int n = 0;

    g_assert(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    g_dir_close(dir);
    return n;
}

#endif
