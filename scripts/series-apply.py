#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Build the mail-ready series in a worktree of the base (scripts/tree
# series): apply patches/ with git am, and commit our new files in the
# steps patches/overlay.txt gives, each together with its build lines, so
# that every commit builds.
#
#   scripts/series-apply.py WORKTREE TOP PATCH...   (overlay files on stdin)
#
# A step of overlay.txt is a "Files:" line of shell patterns (paths in
# this repository), then optional lines:
#   With: SUBJECT     a patch of patches/ whose changes go into this
#                     commit (its build lines); it is not committed alone
#   Trimmed: FILE...  files of this step that list the sources of later
#                     steps (meson.build, trace-events): each commit gets
#                     them without what names a source not added yet
# then the commit message; "---" lines separate steps.  A step is
# committed at the place of its With: patches (they are all applied
# then), after the steps before it; a step without With: right after the
# one before it.  A file no pattern names goes into the last step.

import email
import fnmatch
import os
import re
import subprocess
import sys


def die(msg):
    sys.exit("series: " + msg)


def parse_steps(path):
    text = [l for l in open(path).read().split("\n") if not l.startswith("#")]
    steps = []
    for s in "\n".join(text).strip().split("\n---\n"):
        lines = s.strip().split("\n")
        step = {"files": [], "with": [], "trimmed": [], "list": []}
        while lines and re.match(r"^(Files|With|Trimmed):", lines[0]):
            key, _, val = lines.pop(0).partition(":")
            if key == "With":
                step["with"].append(val.strip())
            else:
                step[key.lower()] += val.split()
        if not step["files"]:
            die("%s: a step without a Files: line" % path)
        step["msg"] = "\n".join(lines).strip() + "\n"
        steps.append(step)
    return steps


def subject(patch):
    with open(patch, "rb") as f:
        msg = email.message_from_binary_file(f)
    s = " ".join(str(msg["Subject"]).split())
    return re.sub(r"^\[PATCH[^]]*\] *", "", s)


# Sources (*.c) of the overlay a line names, as paths in the repository.
def named_sources(line, directory, overlay):
    return {os.path.join(directory, n) for n in re.findall(r"[\w-]+\.c\b", line)
            if os.path.join(directory, n) in overlay}


def trim(path, text, present, overlay):
    """@text without the lines and blocks that name only absent sources."""
    directory = os.path.dirname(path)
    end = "\n" if text.endswith("\n") else ""
    out = []
    for block in text[:len(text) - len(end)].split("\n\n"):
        lines = block.split("\n")
        named = set()
        kept = []
        for line in lines:
            n = named_sources(line, directory, overlay)
            named |= n
            if n and not n & present:
                continue
            kept.append(line)
        if named and not named & present:
            continue
        out.append("\n".join(kept))
    for line in "\n\n".join(out).split("\n"):
        if named_sources(line, directory, overlay) - present:
            die("%s: cannot trim '%s': name one source per line, and keep "
                "the lines of one step's sources in blocks of their own"
                % (path, line.strip()))
    return "\n\n".join(out) + end


def git(wt, *args, **kw):
    return subprocess.run(["git", "-C", wt] + list(args), check=True, **kw)


def main():
    wt, top = sys.argv[1], sys.argv[2]
    patches = sys.argv[3:]
    overlay = [l.strip() for l in sys.stdin if l.strip()]
    steps = parse_steps(os.path.join(top, "patches", "overlay.txt"))
    for f in overlay:
        for step in steps:
            if any(fnmatch.fnmatchcase(f, p) for p in step["files"]):
                step["list"].append(f)
                break
        else:
            steps[-1]["list"].append(f)
    overlay = set(overlay)
    for step in steps:
        for t in step["trimmed"]:
            if t not in step["list"]:
                die("Trimmed: %s is not a file of its step" % t)

    subjects = {p: subject(p) for p in patches}
    owner = {}
    for i, step in enumerate(steps):
        for w in step["with"]:
            found = [p for p in patches if subjects[p] == w]
            if len(found) != 1:
                die("With: %s: %d patches have that subject" % (w, len(found)))
            owner[found[0]] = i
    for i, step in enumerate(steps):
        if not step["list"] and not step["with"]:
            die("step %d (%s) has no files and no With: patch"
                % (i + 1, step["msg"].split("\n")[0]))
        mine = [k for k, p in enumerate(patches) if owner.get(p) == i]
        if mine and mine != list(range(mine[0], mine[0] + len(mine))):
            die("the With: patches of step %d are not consecutive in "
                "patches/: they are all applied at the first one" % (i + 1))
    # Steps are committed in order: a step's With: patches come after
    # those of the steps before it
    last = -1
    for p in patches:
        if p in owner:
            if owner[p] < last:
                die("%s: its step comes before the step of an earlier patch"
                    % os.path.basename(p))
            last = owner[p]

    ident = ["-c", "user.name=" + os.environ["SERIES_NAME"],
             "-c", "user.email=" + os.environ["SERIES_EMAIL"]]
    done = 0

    def commit_step(i):
        step = steps[i]
        for p in patches:
            if owner.get(p) == i and subprocess.run(
                    ["git", "-C", wt, "apply", "--index", p]).returncode:
                die("%s does not apply" % os.path.basename(p))
        present = set()
        for s in steps[:i + 1]:
            present |= set(s["list"])
        trimmed = [t for s in steps[:i + 1] for t in s["trimmed"]]
        for f in step["list"]:
            dst = os.path.join(wt, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(os.path.join(top, f), "rb") as src:
                data = src.read()
            with open(dst, "wb") as out:
                out.write(data)
            os.chmod(dst, os.stat(os.path.join(top, f)).st_mode & 0o777)
        for t in trimmed:
            text = open(os.path.join(top, t)).read()
            with open(os.path.join(wt, t), "w") as out:
                out.write(trim(t, text, present, overlay))
        git(wt, "add", "-f", *(step["list"] + trimmed))
        git(wt, *ident, "commit", "-q", "-s", "--no-verify", "-F", "-",
            input=step["msg"], text=True)

    def commit_through(i):
        """Commit the steps through @i, and those without With: after it."""
        nonlocal done
        while done <= i or (done < len(steps) and not steps[done]["with"]):
            if steps[done]["list"] or steps[done]["with"]:
                commit_step(done)
            done += 1

    for p in patches:
        if p in owner:
            if owner[p] >= done:
                commit_through(owner[p])
            continue
        r = subprocess.run(["git", "-C", wt, "am", "-q", "--keep-cr", p])
        if r.returncode:
            die("%s does not apply" % os.path.basename(p))
    commit_through(len(steps) - 1)


main()
