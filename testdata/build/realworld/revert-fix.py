#!/usr/bin/env python3
"""Turn zlib 1.2.13's inflate.c back into the vulnerable 1.2.12 form."""
import sys

path = sys.argv[1]
src = open(path).read()
fixed = """                    if (state->head != Z_NULL &&
                        state->head->extra != Z_NULL &&
                        (len = state->head->extra_len - state->length) <
                            state->head->extra_max) {
                        zmemcpy"""
vulnerable = """                    if (state->head != Z_NULL &&
                        state->head->extra != Z_NULL) {
                        len = state->head->extra_len - state->length;
                        zmemcpy"""
if fixed not in src:
    sys.exit("inflate.c does not contain the CVE-2022-37434 fix")
open(path, "w").write(src.replace(fixed, vulnerable))
