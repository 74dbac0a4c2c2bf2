#!/usr/bin/env python3
"""Build `autotriage eval apply` cases from real fixes, damaged the way models damage them.

usage: make_apply_cases.py DEV.jsonl MIRROR_DIR OUT.jsonl

For each SWE-bench record whose repository is under MIRROR_DIR (owner+name/repo), the
files the fix touches are read at the base commit (`git show`), the clean fix is applied
with `git apply` to get the expected result, and the fix is written out clean and damaged:
hunk line numbers off by 3-40, wrong hunk counts, a context line dropped, trailing
whitespace, tabs for spaces, the whole hunk re-indented by 4 spaces, the headers missing;
and the same as SEARCH/REPLACE blocks. The output holds fetched code: write it to a
git-ignored folder (`.cases/`).
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")


def split_patch(patch):
    """[(header_lines, path, [hunk_lines...])] per file; hunk_lines start with '@@'."""
    files = []
    cur = None
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            cur = {"header": [line], "path": line.split(" b/", 1)[1], "hunks": []}
            files.append(cur)
        elif cur is not None and not cur["hunks"] and not line.startswith("@@"):
            cur["header"].append(line)
        elif line.startswith("@@"):
            cur["hunks"].append([line])
        elif cur is not None and cur["hunks"]:
            cur["hunks"][-1].append(line)
    return files


def join(files, headers=True):
    out = []
    for f in files:
        if headers:
            out.extend(f["header"])
        for h in f["hunks"]:
            out.extend(h)
    return "\n".join(out) + "\n"


def body_map(files, fn):
    return [{**f, "hunks": [[h[0]] + [fn(l) for l in h[1:]] for h in f["hunks"]]} for f in files]


def header_map(files, fn):
    return [{**f, "hunks": [[fn(h[0])] + h[1:] for h in f["hunks"]]} for f in files]


def shift(rng):
    def f(header):
        m = HUNK.match(header)
        d = rng.randint(3, 40) * rng.choice([-1, 1])
        a, b = max(1, int(m.group(1)) + d), max(1, int(m.group(3)) + d)
        return f"@@ -{a},{m.group(2) or 1} +{b},{m.group(4) or 1} @@{m.group(5)}"
    return f


def miscount(rng):
    def f(header):
        m = HUNK.match(header)
        return f"@@ -{m.group(1)},{int(m.group(2) or 1) + rng.randint(1, 5)} +{m.group(3)},{max(0, int(m.group(4) or 1) - rng.randint(1, 3))} @@{m.group(5)}"
    return f


def drop_context(rng, files):
    out = []
    for f in files:
        hunks = []
        for h in f["hunks"]:
            ctx = [i for i, l in enumerate(h) if i > 0 and l.startswith(" ") and l.strip()]
            if ctx:
                k = rng.choice(ctx)
                h = h[:k] + h[k + 1:]
            hunks.append(h)
        out.append({**f, "hunks": hunks})
    return out


def trailing(l):
    return l + "   " if l[:1] in (" ", "+") and l[1:].strip() else l


def tabs(l):
    if l[:1] not in (" ", "+", "-"):
        return l
    body = l[1:]
    n = len(body) - len(body.lstrip(" "))
    return l[0] + "\t" * (n // 4) + " " * (n % 4) + body.lstrip(" ")


def reindent(l):
    return l[0] + "    " + l[1:] if l[:1] in (" ", "+", "-") and l[1:].strip() else l


def blocks(files, with_path=True, line_fn=lambda l: l, drop=None):
    out = []
    for f in files:
        for h in f["hunks"]:
            body = h[1:]
            if drop is not None:
                # Drop one unchanged line from both sides, as a model that skipped it.
                common = [i for i, l in enumerate(body) if l.startswith(" ") and l.strip()]
                if common:
                    k = drop.choice(common)
                    body = body[:k] + body[k + 1:]
            old = [l[1:] for l in body if l[:1] in (" ", "-")]
            new = [l[1:] for l in body if l[:1] in (" ", "+")]
            if with_path:
                out.append(f["path"])
            out.append("<<<<<<< SEARCH")
            out.extend(line_fn(l) for l in old)
            out.append("=======")
            out.extend(line_fn(l) for l in new)
            out.append(">>>>>>> REPLACE")
            out.append("")
    return "\n".join(out) + "\n"


def main():
    dev, mirror, out_path = sys.argv[1:4]
    rng = random.Random(7)
    out = open(out_path, "w")
    n = 0
    for line in open(dev):
        r = json.loads(line)
        git_dir = os.path.join(mirror, r["repo"].replace("/", "+"), "repo")
        if not os.path.isdir(git_dir):
            continue
        files = split_patch(r["patch"])
        originals = {}
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                p = subprocess.run(["git", "--git-dir", git_dir, "show", f"{r['base_commit']}:{f['path']}"], capture_output=True)
                if p.returncode == 0:
                    originals[f["path"]] = p.stdout.decode("utf-8", "replace")
                    dst = os.path.join(tmp, f["path"])
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    open(dst, "w").write(originals[f["path"]])
            patch_file = os.path.join(tmp, "fix.patch")
            open(patch_file, "w").write(r["patch"])
            if subprocess.run(["git", "apply", "fix.patch"], cwd=tmp, capture_output=True).returncode != 0:
                continue
            expected = {}
            for f in files:
                dst = os.path.join(tmp, f["path"])
                expected[f["path"]] = open(dst).read() if os.path.exists(dst) else None
        variants = {
            "none": join(files),
            "offset": join(header_map(files, shift(rng))),
            "count": join(header_map(files, miscount(rng))),
            "drop_context": join(drop_context(rng, files)),
            "trailing_whitespace": join(body_map(files, trailing)),
            "tabs": join(body_map(files, tabs)),
            "reindent": join(body_map(files, reindent)),
            "no_headers": join(files, headers=False),
            "blocks": blocks(files),
            "blocks_reindent": blocks(files, line_fn=lambda l: "    " + l if l.strip() else l),
            "blocks_trailing_whitespace": blocks(files, line_fn=lambda l: l + "  " if l.strip() else l),
            "blocks_tabs": blocks(files, line_fn=lambda l: "\t" * ((len(l) - len(l.lstrip(" "))) // 4) + l.lstrip(" ") if l.strip() else l),
            "blocks_dropped_line": blocks(files, drop=rng),
            "blocks_no_path": blocks(files, with_path=False),
        }
        for name, patch in variants.items():
            out.write(json.dumps({"id": f"{r['instance_id']}/{name}", "corruption": name, "patch": patch,
                                  "files": originals, "expected": expected}) + "\n")
            n += 1
    print(f"{n} cases in {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
