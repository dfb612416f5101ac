#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A scripted vfio-user server for fault injection: it does what real
# servers never do, so tests can check that the client copes.
#
#   fault-server.py --socket PATH --mode MODE [--log FILE] [options]
#
# Modes:
#   close        accept the client, then close the connection at once
#   garbage      answer VERSION with a malformed reply
#   device       emulate a small PCI device (vendor 0x1af4, device 0x10f0)
#                with BAR0 (4 KiB MMIO scratch memory, message-accessed),
#                INTx and MSI (one vector each), and reset; DMA_MAP and
#                DMA_UNMAP are recorded.  Writing a command number to
#                BAR0 offset 0xff8 makes the server send DMA requests;
#                ADDR is the 64-bit value at BAR0 offset 0xfe0, or the
#                start of the first writable map if that is 0; MAX is the
#                max_data_xfer_size the client proposed:
#                  1  DMA_READ of 8 bytes outside every map
#                  2  DMA_READ of MAX + 4 KiB inside the largest map
#                  3  DMA_WRITE of 8 bytes 0x5a to the first read-only map
#                  4  arm: the next read of BAR0 offset 0xff0 is answered
#                     only after a DMA_READ of 16 bytes at ADDR
#                  5  DMA_WRITE of 16 bytes 0xa5 at ADDR, then DMA_READ of
#                     them back
#                  6  DMA_READ of MAX bytes inside the largest map
#                  7  DMA_WRITE of 16 bytes 0x3c at ADDR, which the test
#                     puts 8 bytes before the end of a map, with no map
#                     after it
#                  8  DMA_READ of 16 bytes across the boundary of the
#                     first two adjacent maps
#                  9  DMA_WRITE of MAX + 4 KiB inside the largest map
#                 10  a burst: --burst N DMA_READs of 4 bytes at ADDR + 4 *
#                     (i % 1024), sent back to back by a thread while the
#                     replies are read and checked against a DMA_READ of
#                     the 4 KiB at ADDR done first; logs {"event":
#                     "burst", "sent", "answered", "bad"}
#                 11  a burst of 2000 DMA_WRITEs of 64 KiB of 0x6b at
#                     ADDR, as above (memory use under back-pressure)
#                 12  hang: from now on read every message, answer none
#                 13  drop: close the connection (its reply sent), keep the
#                     device's state but not the DMA maps (as the spec
#                     says of a server that loses its client), and accept
#                     a new client
#                Results go to the log as JSON lines:
#                  {"event": "dma-reply", "cmd": N, "error": E, "len": L,
#                   "data": HEX of the first 64 bytes read}
#                Client messages that arrive while the server waits for
#                the reply to its request are served after it ("deferred").
#                --refuse-map ADDR+SIZE (repeatable): DMA_MAP of exactly
#                that range fails with EINVAL ("dma-map-refused")
#   die-on-read  like device, but exits without replying to the Nth
#                REGION_READ of BAR0 (--die-after N, default 1)
#
# --fail WHAT breaks one reply of the device's bring-up (not-pci,
# few-regions, many-regions, short-region-info, wrong-region-index,
# bad-region-caps, cap-loop: a config space capability list that loops,
# msix-bir: an MSI-X table in BAR 7), for the client's realize to fail
# and unwind; or BAR0 mmap-able from a memfd with one sparse area that
# cannot be mapped (bad-sparse: beyond the region, unaligned-sparse: not
# page-aligned) or can (short-file-sparse: a 16 KiB BAR0 whose file ends
# at 8 KiB, its area inside the file, as SPDK's).
#
# --migration ok|refuse-write offers migration v2 (stop-and-copy only, no
# DMA logging): the device state is BAR0's 4 KiB, read with MIG_DATA_READ
# in STOP_COPY and written with MIG_DATA_WRITE in RESUMING; refuse-write
# fails every MIG_DATA_WRITE with EIO ("mig-write-refused"), die-stop-copy
# exits at the first MIG_DATA_READ in STOP_COPY ("dying").  Device state
# changes are logged ("mig-state").
#
# --iofds gives BAR0 io fds for DEVICE_GET_REGION_IO_FDS (40-byte entries,
# one eventfd shared by all): a good ioeventfd at 0x100 (4 bytes), then
# bad ones: the same again (overlapping), size 3, beyond the region, an
# fd_index with no descriptor, an ioregionfd, an unknown flag.
#
# Each message is read whole; every event is logged as a JSON line.

import argparse
import json
import os
import socket
import struct
import sys
import threading

HDR = struct.Struct("<HHIII")
CMD_VERSION, CMD_DMA_MAP, CMD_DMA_UNMAP, CMD_GET_INFO, CMD_GET_REGION_INFO, \
    CMD_GET_REGION_IO_FDS, CMD_GET_IRQ_INFO, CMD_SET_IRQS, CMD_REGION_READ, \
    CMD_REGION_WRITE, CMD_DMA_READ, CMD_DMA_WRITE, CMD_RESET = range(1, 14)
CMD_DEVICE_FEATURE, CMD_MIG_DATA_READ, CMD_MIG_DATA_WRITE = range(16, 19)
FEATURE_GET, FEATURE_SET, FEATURE_PROBE = 1 << 16, 1 << 17, 1 << 18
FEATURE_MIGRATION, FEATURE_MIG_STATE = 1, 2
MIG_STOP_COPY, MIG_RESUMING, MIG_RUNNING = 3, 4, 2
EIO = 5
F_REPLY, F_NO_REPLY, F_ERROR = 1, 0x10, 0x20
EINVAL, ENOTSUP, EFAULT, EPERM, ENOENT = 22, 95, 14, 1, 2
MAX_XFER = 1 << 20

CONFIG, BAR0 = 7, 0
NUM_REGIONS, NUM_IRQS = 9, 5


class Server:
    def __init__(self, args):
        self.args = args
        self.log = open(args.log, "a", buffering=1) if args.log else sys.stdout
        self.conn = None
        self.next_id = 0x8000
        self.maps = []  # (addr, size, prot)
        self.bar0 = bytearray(4096)
        self.cfg = bytearray(256)
        struct.pack_into("<HHHH", self.cfg, 0, 0x1af4, 0x10f0, 0, 0x10)
        self.cfg[0x08] = 1          # revision
        self.cfg[0x0b] = 0xff       # class: unassigned
        struct.pack_into("<I", self.cfg, 0x10, 0)  # BAR0: 32-bit memory
        self.cfg[0x34] = 0x40       # capabilities: MSI at 0x40
        self.cfg[0x3d] = 1          # INTA
        struct.pack_into("<BBH", self.cfg, 0x40, 0x05, 0x00, 0x0000)
        if args.fail == "cap-loop":
            self.cfg[0x41] = 0x40           # MSI's next: itself
        elif args.fail == "msix-bir":
            self.cfg[0x41] = 0x50           # MSI, then MSI-X at 0x50
            struct.pack_into("<BBHII", self.cfg, 0x50, 0x11, 0, 0, 7, 7)
        self.bar0_mask = ~(4096 - 1) & 0xffffffff
        self.armed_read = False
        self.bar0_reads = 0
        self.client_max_xfer = MAX_XFER
        self.deferred = []
        self.hang = False
        self.drop = False
        self.lsock = None
        self.mig_state = MIG_RUNNING
        self.mig_pos = 0

    def event(self, **kw):
        self.log.write(json.dumps(kw) + "\n")

    # -- socket I/O --------------------------------------------------------
    def recv_exact(self, n, fds=None):
        buf = b""
        while len(buf) < n:
            if fds is not None and not buf:
                data, anc, _, _ = self.conn.recvmsg(
                    n - len(buf), socket.CMSG_SPACE(16 * 4))
                for level, typ, cdata in anc:
                    if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                        fds.extend(struct.unpack("%di" % (len(cdata) // 4),
                                                 cdata[:len(cdata) // 4 * 4]))
            else:
                data = self.conn.recv(n - len(buf))
            if not data:
                raise EOFError
            buf += data
        return buf

    def recv_msg(self):
        fds = []
        hdr = self.recv_exact(HDR.size, fds)
        msg_id, cmd, size, flags, err = HDR.unpack(hdr)
        body = self.recv_exact(size - HDR.size) if size > HDR.size else b""
        return msg_id, cmd, flags, err, body, fds

    def send(self, msg_id, cmd, flags, body=b"", err=0):
        self.conn.sendall(HDR.pack(msg_id, cmd, HDR.size + len(body),
                                   flags, err) + body)

    def reply(self, msg_id, cmd, body=b""):
        self.send(msg_id, cmd, F_REPLY, body)

    def error(self, msg_id, cmd, err):
        self.send(msg_id, cmd, F_REPLY | F_ERROR, b"", err)

    # -- server-to-client requests ------------------------------------------
    def request(self, cmd, body):
        """Send a request and wait for its reply; client requests that
        come first are kept for later."""
        msg_id = self.next_id
        self.next_id = 0x8000 | ((self.next_id + 1) & 0x7fff)
        self.send(msg_id, cmd, 0, body)
        while True:
            msg = self.recv_msg()
            rid, rcmd, flags, err, rbody, fds = msg
            if flags & 0xf == F_REPLY and rid == msg_id:
                for fd in fds:
                    os.close(fd)
                return (err if flags & F_ERROR else 0), rbody
            if flags & 0xf == F_REPLY:
                for fd in fds:
                    os.close(fd)
                self.event(event="unexpected", id=rid, cmd=rcmd)
            else:
                self.event(event="deferred", id=rid, cmd=rcmd)
                self.deferred.append(msg)

    def dma_read(self, addr, count):
        return self.request(CMD_DMA_READ, struct.pack("<QQ", addr, count))

    def dma_write(self, addr, data):
        return self.request(CMD_DMA_WRITE,
                            struct.pack("<QQ", addr, len(data)) + data)

    def dma_addr(self):
        addr = struct.unpack_from("<Q", self.bar0, 0xfe0)[0]
        if not addr:
            rw = [m for m in self.maps if m[2] & 2]
            addr = rw[0][0] if rw else 1 << 50
        return addr

    def largest_map(self):
        return max(self.maps, key=lambda m: m[1]) if self.maps \
            else (0, 0, 0)

    def dma_event(self, n, err, body):
        data = body[16:]
        self.event(event="dma-reply", cmd=n, error=err, len=len(data),
                   data=data[:64].hex())

    def run_dma_command(self, n):
        big = self.client_max_xfer
        if n == 1:
            top = max([a + s for a, s, _ in self.maps] or [0])
            err, body = self.dma_read(top + (1 << 40), 8)
        elif n == 2:
            err, body = self.dma_read(self.largest_map()[0], big + 4096)
        elif n == 3:
            ro = [m for m in self.maps if not m[2] & 2]
            addr = ro[0][0] if ro else (1 << 50)
            err, body = self.dma_write(addr, b"\x5a" * 8)
        elif n == 4:
            self.armed_read = True
            self.event(event="armed")
            return
        elif n == 5:
            err, body = self.dma_write(self.dma_addr(), b"\xa5" * 16)
            if not err:
                err, body = self.dma_read(self.dma_addr(), 16)
        elif n == 6:
            err, body = self.dma_read(self.largest_map()[0], big)
        elif n == 7:
            err, body = self.dma_write(self.dma_addr(), b"\x3c" * 16)
        elif n == 8:
            ends = {a + s: a for a, s, _ in self.maps}
            pairs = sorted(a for a, _, _ in self.maps if a in ends)
            addr = pairs[0] - 8 if pairs else 1 << 50
            err, body = self.dma_read(addr, 16)
        elif n == 9:
            err, body = self.dma_write(self.largest_map()[0],
                                       b"\x77" * (big + 4096))
        elif n in (10, 11):
            self.burst(n)
            return
        elif n == 12:
            self.event(event="hanging")
            self.hang = True
            return
        elif n == 13:
            self.drop = True
            return
        else:
            return
        self.dma_event(n, err, body)

    def burst(self, n):
        """Send --burst requests without waiting, check every reply."""
        addr = self.dma_addr()
        count = self.args.burst if n == 10 else 2000
        err, ref = self.dma_read(addr, 4096)
        ref = ref[16:]
        if err or len(ref) != 4096:
            self.event(event="burst", sent=0, answered=0, bad=-1)
            return
        data = b"\x6b" * 65536
        ids = [0x4000 | (i & 0x3fff) for i in range(count)]

        def sender():
            for i in range(count):
                if n == 10:
                    body = struct.pack("<QQ", addr + 4 * (i % 1024), 4)
                    self.send(ids[i], CMD_DMA_READ, 0, body)
                else:
                    body = struct.pack("<QQ", addr, len(data)) + data
                    self.send(ids[i], CMD_DMA_WRITE, 0, body)

        thread = threading.Thread(target=sender)
        thread.start()
        answered = bad = 0
        while answered < count:
            msg = self.recv_msg()
            rid, rcmd, flags, rerr, rbody, fds = msg
            for fd in fds:
                os.close(fd)
            if flags & 0xf != F_REPLY:
                self.deferred.append(msg)
                continue
            i = answered
            answered += 1
            if rid != ids[i] or flags & F_ERROR:
                bad += 1
            elif n == 10 and rbody[16:] != ref[4 * (i % 1024):
                                             4 * (i % 1024) + 4]:
                bad += 1
            elif n == 11 and len(rbody) != 16:
                bad += 1
        thread.join()
        self.event(event="burst", sent=count, answered=answered, bad=bad)

    # -- client requests ------------------------------------------------------
    def handle(self, msg_id, cmd, flags, body, fds):
        no_reply = flags & F_NO_REPLY
        if self.hang:
            self.event(event="ignored", id=msg_id, cmd=cmd)
            for fd in fds:
                os.close(fd)
            return
        if cmd == CMD_VERSION:
            major, minor = struct.unpack_from("<HH", body)
            caps = body[4:].rstrip(b"\0").decode(errors="replace")
            self.event(event="version", major=major, minor=minor, caps=caps)
            try:
                self.client_max_xfer = json.loads(caps)["capabilities"].get(
                    "max_data_xfer_size", MAX_XFER)
            except (ValueError, KeyError, AttributeError):
                pass
            if self.args.mode == "garbage":
                self.reply(msg_id, cmd, b"\x01\x00\x00\x00{not json")
                return
            caps = {"max_msg_fds": 8, "max_data_xfer_size": MAX_XFER}
            if self.args.migration:
                caps["migration"] = {"pgsize": 4096}
            caps = json.dumps({"capabilities": caps})
            self.reply(msg_id, cmd,
                       struct.pack("<HH", 0, 1) + caps.encode() + b"\0")
        elif cmd == CMD_GET_INFO:
            argsz = struct.unpack_from("<I", body)[0]
            fl, nreg = 1 | 2, NUM_REGIONS
            if self.args.fail == "not-pci":
                fl = 1
            elif self.args.fail == "few-regions":
                nreg = 3
            elif self.args.fail == "many-regions":
                nreg = 100000
            self.reply(msg_id, cmd, struct.pack("<IIII", max(argsz, 16),
                                                fl, nreg, NUM_IRQS))
        elif cmd == CMD_GET_REGION_INFO:
            argsz, _, index = struct.unpack_from("<III", body)
            size, fl = 0, 0
            if index == CONFIG:
                size, fl = 256, 3
            elif index == BAR0:
                # SPDK's BAR0 is 16 KiB, its file ends at the doorbells
                size = 0x4000 if self.args.fail == "short-file-sparse" \
                    else 4096
                fl = 3
            info = struct.pack("<IIIIQQ", 32, fl, index, 0, size, 0)
            if self.args.fail == "short-region-info" and index == BAR0:
                info = info[:20]
            elif self.args.fail == "wrong-region-index" and index == BAR0:
                info = struct.pack("<IIIIQQ", 32, fl, 5, 0, size, 0)
            elif self.args.fail == "bad-region-caps" and index == BAR0:
                # CAPS set, cap_offset pointing past the reply
                info = struct.pack("<IIIIQQ", 32, fl | 8, index, 200, size, 0)
            elif self.args.fail.endswith("-sparse") and index == BAR0:
                self.sparse_region_info(msg_id, argsz, fl, size)
                return
            self.reply(msg_id, cmd, info)
        elif cmd == CMD_GET_IRQ_INFO:
            argsz, _, index, _ = struct.unpack_from("<IIII", body)
            # INTx, MSI, and the error and request interrupts: one each
            count = 1 if index in (0, 1, 3, 4) else 0
            fl = 1 | (2 | 4 if index == 0 else 8 if index in (1, 2) else 0)
            self.reply(msg_id, cmd, struct.pack("<IIII", 16, fl, index, count))
        elif cmd == CMD_SET_IRQS:
            argsz, fl, index, start, count = struct.unpack_from("<IIIII", body)
            self.event(event="set-irqs", flags=fl, index=index, start=start,
                       count=count, fds=len(fds))
            self.reply(msg_id, cmd)
        elif cmd == CMD_REGION_READ:
            off, region, count = struct.unpack_from("<QII", body)
            if region == BAR0 and off == 0xff0 and self.armed_read:
                self.armed_read = False
                err, rbody = self.dma_read(self.dma_addr(), 16)
                self.dma_event(4, err, rbody)
            if region == BAR0 and self.args.mode == "die-on-read":
                self.bar0_reads += 1
                if self.bar0_reads >= self.args.die_after:
                    self.event(event="dying")
                    os._exit(0)
            data = self.region_read(region, off, count)
            if data is None:
                self.error(msg_id, cmd, EINVAL)
            else:
                self.reply(msg_id, cmd,
                           struct.pack("<QII", off, region, count) + data)
        elif cmd == CMD_REGION_WRITE:
            off, region, count = struct.unpack_from("<QII", body)
            ok = self.region_write(region, off, body[16:16 + count])
            if not no_reply:
                if ok:
                    self.reply(msg_id, cmd, struct.pack("<QII", off, region,
                                                        count))
                else:
                    self.error(msg_id, cmd, EINVAL)
            if ok and region == BAR0 and off == 0xff8:
                self.run_dma_command(body[16])
        elif cmd == CMD_DMA_MAP:
            argsz, fl, offset, addr, size = struct.unpack_from("<IIQQQ", body)
            if (addr, size) in self.args.refuse_map:
                self.event(event="dma-map-refused", addr=addr, size=size)
                self.error(msg_id, cmd, EINVAL)
                for fd in fds:
                    os.close(fd)
                return
            self.maps.append((addr, size, fl & 3))
            self.event(event="dma-map", addr=addr, size=size, flags=fl,
                       fd=len(fds) > 0)
            self.reply(msg_id, cmd)
        elif cmd == CMD_DMA_UNMAP:
            argsz, fl, addr, size = struct.unpack_from("<IIQQ", body)
            self.maps = [m for m in self.maps if m[0] != addr]
            self.event(event="dma-unmap", addr=addr, size=size)
            self.reply(msg_id, cmd, body[:24])
        elif cmd == CMD_DEVICE_FEATURE and self.args.migration:
            self.device_feature(msg_id, body)
        elif cmd == CMD_MIG_DATA_READ and self.args.migration:
            argsz, size = struct.unpack_from("<II", body)
            data = b""
            if self.mig_state == MIG_STOP_COPY and \
                    self.args.migration == "die-stop-copy":
                self.event(event="dying")
                os._exit(0)
            if self.mig_state == MIG_STOP_COPY:
                data = bytes(self.bar0[self.mig_pos:self.mig_pos + size])
                self.mig_pos += len(data)
            self.reply(msg_id, cmd, struct.pack("<II", 8 + len(data),
                                                len(data)) + data)
        elif cmd == CMD_MIG_DATA_WRITE and self.args.migration:
            argsz, size = struct.unpack_from("<II", body)
            if self.args.migration == "refuse-write" or \
                    self.mig_state != MIG_RESUMING or \
                    self.mig_pos + size > len(self.bar0):
                self.event(event="mig-write-refused", size=size)
                self.error(msg_id, cmd, EIO)
            else:
                self.bar0[self.mig_pos:self.mig_pos + size] = body[8:8 + size]
                self.mig_pos += size
                self.reply(msg_id, cmd)
        elif cmd == CMD_GET_REGION_IO_FDS and self.args.iofds:
            argsz, fl, index, count = struct.unpack_from("<IIII", body)
            ents = [(0x100, 4, 0, 0, 0, 0), (0x100, 4, 0, 0, 0, 0),
                    (0x200, 3, 0, 0, 0, 0), (0x1000, 4, 0, 0, 0, 0),
                    (0x300, 4, 5, 0, 0, 0), (0x400, 4, 0, 1, 0, 0),
                    (0x500, 4, 0, 0, 0x80, 0)] if index == BAR0 else []
            size = 16 + 40 * len(ents)
            if argsz < size:
                self.reply(msg_id, cmd, struct.pack("<IIII", size, 0, index,
                                                    len(ents)))
            else:
                efd = os.eventfd(0) if ents else None
                data = struct.pack("<IIII", size, 0, index, len(ents))
                for e in ents:
                    data += struct.pack("<QQIIIIQ", *e, 0)
                msg = HDR.pack(msg_id, cmd, HDR.size + len(data), F_REPLY,
                               0) + data
                socket.send_fds(self.conn, [msg], [efd] if ents else [])
                if efd is not None:
                    os.close(efd)
            self.event(event="io-fds", index=index, count=len(ents))
        elif cmd == CMD_RESET:
            self.event(event="reset")
            self.bar0[:] = bytes(4096)
            self.reply(msg_id, cmd)
        else:
            self.error(msg_id, cmd, ENOTSUP)
        for fd in fds:
            os.close(fd)

    def device_feature(self, msg_id, body):
        argsz, flags = struct.unpack_from("<II", body)
        feature = flags & 0xffff
        if feature not in (FEATURE_MIGRATION, FEATURE_MIG_STATE):
            self.error(msg_id, CMD_DEVICE_FEATURE, ENOTSUP)
        elif flags & FEATURE_PROBE:
            self.reply(msg_id, CMD_DEVICE_FEATURE, body[:8])
        elif flags & FEATURE_GET and feature == FEATURE_MIGRATION:
            self.reply(msg_id, CMD_DEVICE_FEATURE,
                       struct.pack("<IIQ", 16, flags, 1))     # STOP_COPY
        elif flags & FEATURE_GET:
            self.reply(msg_id, CMD_DEVICE_FEATURE,
                       struct.pack("<IIII", 16, flags, self.mig_state, 0))
        elif flags & FEATURE_SET and feature == FEATURE_MIG_STATE:
            self.mig_state = struct.unpack_from("<I", body, 8)[0]
            self.mig_pos = 0
            self.event(event="mig-state", state=self.mig_state)
            self.reply(msg_id, CMD_DEVICE_FEATURE, body)
        else:
            self.error(msg_id, CMD_DEVICE_FEATURE, EINVAL)

    def sparse_region_info(self, msg_id, argsz, fl, size):
        """BAR0 mmap-able from a memfd, with one sparse area: beyond the
        region (bad-sparse), not page-aligned (unaligned-sparse), or, as
        SPDK's, inside a file that ends before the region does
        (short-file-sparse)."""
        need = 32 + 16 + 16
        if argsz < need:
            info = struct.pack("<IIIIQQ", need, fl | 4 | 8, BAR0, 0, size, 0)
            self.reply(msg_id, CMD_GET_REGION_INFO, info)
            return
        area, file_size = {
            "bad-sparse": ((0x1000, 0x1000), size),
            "unaligned-sparse": ((0x800, 0x800), size),
            "short-file-sparse": ((0x1000, 0x1000), 0x2000),
        }[self.args.fail]
        info = struct.pack("<IIIIQQ", need, fl | 4 | 8, BAR0, 32, size, 0)
        info += struct.pack("<HHIII", 1, 1, 0, 1, 0)
        info += struct.pack("<QQ", *area)
        fd = os.memfd_create("bar0")
        os.ftruncate(fd, file_size)
        body = HDR.pack(msg_id, CMD_GET_REGION_INFO, HDR.size + len(info),
                        F_REPLY, 0) + info
        self.conn.sendmsg([body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    struct.pack("i", fd))])
        os.close(fd)

    def region_read(self, region, off, count):
        if region == CONFIG and off + count <= 256:
            return bytes(self.cfg[off:off + count])
        if region == BAR0 and off + count <= 4096:
            return bytes(self.bar0[off:off + count])
        if region not in (CONFIG, BAR0):
            return None
        return None

    def region_write(self, region, off, data):
        if region == CONFIG and off + len(data) <= 256:
            if off == 0x10 and len(data) == 4:
                v = struct.unpack("<I", data)[0] & self.bar0_mask
                struct.pack_into("<I", self.cfg, 0x10, v)
            elif off in (0x04, 0x05) or off >= 0x40:
                self.cfg[off:off + len(data)] = data
            return True
        if region == BAR0 and off + len(data) <= 4096:
            self.bar0[off:off + len(data)] = data
            return True
        return False

    def serve(self):
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(self.args.socket):
            os.unlink(self.args.socket)
        lsock.bind(self.args.socket)
        lsock.listen(1)
        self.event(event="listening", socket=self.args.socket)
        self.conn, _ = lsock.accept()
        self.event(event="accepted")
        if self.args.mode == "close":
            lsock.close()
            self.conn.close()
            self.event(event="closed")
            return
        try:
            while True:
                if self.deferred:
                    msg = self.deferred.pop(0)
                else:
                    msg = self.recv_msg()
                msg_id, cmd, flags, err, body, fds = msg
                self.handle(msg_id, cmd, flags, body, fds)
                if self.drop:
                    self.drop = False
                    self.conn.close()
                    self.maps = []
                    self.deferred = []
                    self.event(event="dropped")
                    self.conn, _ = lsock.accept()
                    self.event(event="accepted")
        except (EOFError, ConnectionResetError, BrokenPipeError):
            self.event(event="eof")


def main():
    p = argparse.ArgumentParser(description="A scripted vfio-user server "
                                "for fault injection.")
    p.add_argument("--socket", required=True)
    p.add_argument("--mode", default="device",
                   choices=["close", "garbage", "device", "die-on-read"])
    p.add_argument("--die-after", type=int, default=1)
    p.add_argument("--burst", type=int, default=10000,
                   help="requests in a burst of command 10")
    p.add_argument("--fail", default="",
                   choices=["", "not-pci", "few-regions", "many-regions",
                            "short-region-info", "wrong-region-index",
                            "bad-region-caps", "cap-loop", "msix-bir",
                            "bad-sparse", "unaligned-sparse",
                            "short-file-sparse"],
                   help="break one reply of the device's bring-up")
    p.add_argument("--refuse-map", action="append", default=[],
                   type=lambda v: tuple(int(x, 0) for x in v.split("+")))
    p.add_argument("--migration", default="", choices=["", "ok",
                                                        "refuse-write",
                                                        "die-stop-copy"])
    p.add_argument("--iofds", action="store_true")
    p.add_argument("--log")
    Server(p.parse_args()).serve()


if __name__ == "__main__":
    main()
