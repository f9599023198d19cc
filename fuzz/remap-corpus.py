#!/usr/bin/env python3
"""Rewrites the selector byte of seed-corpus files made under an older format list so that
each seed keeps the input/output pair (and as far as possible the chunking and options) its
name says, under the current selector of `agentgate::fuzzing::check_transcode`.

    python3 fuzz/remap-corpus.py OUT_DIR SCHEME:DIR [SCHEME:DIR ...]

SCHEME is the selector layout the files in DIR were made for:
  3   ui-message, session-delta, text-done            (rest = s/9:  chunking rest%7,
                                                        event lines rest/7%2, bound rest/14==1)
  4   ... + ag-ui                                      (rest = s/16: same rules)
  5   ui-message, session-delta, text-done,
      openai-chat, openai-responses                    (rest = s/25: chunking rest%7,
                                                        flags rest>=7, bound flags and rest odd)
  6   the current one (see src/fuzzing.rs)
Fixture seeds are renamed `<fixture>.<from>.to.<to>.<options>`; `nasty-*` seeds keep their
name. The script checks that every name agrees with what its selector decodes to.
"""
import os
import sys

FORMATS = {
    3: ["ui-message", "session-delta", "text-done"],
    4: ["ui-message", "session-delta", "text-done", "ag-ui"],
    5: ["ui-message", "session-delta", "text-done", "openai-chat", "openai-responses"],
    6: ["ui-message", "session-delta", "text-done", "ag-ui", "openai-chat", "openai-responses"],
}
CHUNKINGS = [1, 2, 3, 7, 64, "growing", "whole"]
# The current layout: s / 36 -> (chunking, flags, bound), as in src/fuzzing.rs.
NEW = [
    (1, False, False, "bytewise"),
    (2, True, False, "flags-2byte"),
    (2, False, True, "bound256-2byte"),
    (7, True, True, "flags-bound256-7byte"),
    (64, False, False, "64byte"),
    ("growing", False, False, "growing"),
    ("whole", False, False, "whole"),
    (1, True, True, "flags-bound256-bytewise"),
]


def decode(scheme, s):
    """(from, to, chunking, flags, bound) of selector `s` under `scheme`."""
    fs = FORMATS[scheme]
    n = len(fs)
    src, dst, rest = fs[s % n], fs[s // n % n], s // (n * n)
    if scheme == 6:
        chunking, flags, bound, _ = NEW[rest]
        return src, dst, chunking, flags, bound
    chunking = CHUNKINGS[rest % 7]
    if scheme == 5:
        flags = rest >= 7
        return src, dst, chunking, flags, flags and rest % 2 == 1
    return src, dst, chunking, rest // 7 % 2 == 1, rest // 14 == 1


def encode(src, dst, chunking, flags, bound):
    """The current selector closest to these options; its name suffix."""
    fs = FORMATS[6]
    pair = fs.index(src) + 6 * fs.index(dst)
    if flags and bound:
        rest = 7 if chunking == 1 and 252 + pair <= 255 else 3
    elif bound:
        rest = 2
    elif flags:
        rest = 1
    else:
        rest = {1: 0, 2: 0, 3: 0, 7: 4, 64: 4, "growing": 5, "whole": 6}[chunking]
    return pair + 36 * rest, NEW[rest][3]


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for arg in sys.argv[2:]:
        scheme, src_dir = arg.split(":", 1)
        for name in sorted(os.listdir(src_dir)):
            data = open(os.path.join(src_dir, name), "rb").read()
            src, dst, chunking, flags, bound = decode(int(scheme), data[0])
            head = name.split(".to.")[0]
            named_dst = name.split(".to.")[1].split(".")[0]
            assert named_dst == dst, (arg, name, dst)
            selector, suffix = encode(src, dst, chunking, flags, bound)
            if name.startswith("nasty-"):
                new_name = name
            else:
                stem, named_src = head.split(".", 1)
                assert named_src == src, (arg, name, src)
                new_name = f"{stem}.{src}.to.{dst}.{suffix}"
            new = bytes([selector]) + data[1:]
            if new_name in written and written[new_name][1:] == new[1:]:
                # The same seed from another branch (options that differ only where they do
                # not apply): the first one stays.
                continue
            if new_name in written:
                # Same name, other bytes: keep both.
                i = 2
                while f"{new_name}-{i}" in written:
                    i += 1
                new_name = f"{new_name}-{i}"
            written[new_name] = new
    for name, data in written.items():
        assert decode(6, data[0])[1] == name.split(".to.")[1].split(".")[0], (name, decode(6, data[0]))
        open(os.path.join(out_dir, name), "wb").write(data)
    print(f"{len(written)} files in {out_dir}")


if __name__ == "__main__":
    main()
