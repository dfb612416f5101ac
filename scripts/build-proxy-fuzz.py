#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the transport's libFuzzer target (tests/fuzz/vfio-user-proxy-fuzz.c)
# in OUT: it and the transport's sources (hw/vfio-user/*.c that the unit
# test links) compiled with clang like the transport's unit test (flags
# from build/qemu/build's compile database, less the gcc-only ones), plus
# the sanitizers and any EXTRA flags, and linked like the unit test.  Used by scripts/fuzz and
# scripts/fuzz-coverage (EXTRA: the coverage flags).
#
#   scripts/build-proxy-fuzz.py OUT [EXTRA...]

import json, os, shlex, subprocess, sys
top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
qbuild = top + "/build/qemu/build"
test = "tests/unit/test-vfio-user-proxy"
out, extra = sys.argv[1], sys.argv[2:]
san = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
       "-fno-omit-frame-pointer"] + extra
# gcc-only flags of QEMU's build that clang 14 refuses
drop = ("-ftrivial-auto-var-init=zero", "-fzero-call-used-regs=used-gpr",
        "-Wold-style-declaration", "-Wimplicit-fallthrough=2", "-Werror",
        "-Wno-psabi", "-Wmissing-format-attribute", "-fstack-protector-strong")
db = json.load(open(qbuild + "/compile_commands.json"))
cmds = subprocess.run(["ninja", "-C", qbuild, "-t", "commands", test],
                      check=True, capture_output=True, text=True).stdout
link = [a for a in shlex.split(cmds.strip().splitlines()[-1]) if a not in drop]
# the unit test's object is replaced by the fuzz target's, and each of
# the transport's by one built with the sanitizers
srcs = {a: "../hw/vfio-user/" + a.split("hw_vfio-user_")[1][:-2]
        for a in link if "hw_vfio-user_" in a and a.endswith(".c.o")}
srcs.update({a: top + "/tests/fuzz/vfio-user-proxy-fuzz.c"
             for a in link if a.endswith("test-vfio-user-proxy.c.o")})
assert len(srcs) >= 2, srcs
# everything is compiled with the unit test's flags
cc = next(c for c in db if c["output"].startswith(test + ".p/") and
          c["file"].endswith("test-vfio-user-proxy.c"))
objs = {}
for obj, src in srcs.items():
    args = [a for a in shlex.split(cc["command"]) if a not in drop]
    args[0:args.index("-m64") if "-m64" in args else 1] = ["clang"]
    name = os.path.basename(src)[:-2] + ".o"
    args[args.index("-o") + 1] = out + "/" + name
    args[args.index("-c") + 1] = src
    for flag in ("-MD", "-MQ", "-MF"):
        i = args.index(flag)
        del args[i:i + (1 if flag == "-MD" else 2)]
    subprocess.run(args + san, cwd=qbuild, check=True)
    objs[obj] = out + "/" + name
link[0:link.index("-m64") if "-m64" in link else 1] = ["clang"]
link = [objs.get(a, a) for a in link]
link[link.index("-o") + 1] = out + "/vfio-user-proxy-fuzz"
subprocess.run(link + san, cwd=qbuild, check=True)
